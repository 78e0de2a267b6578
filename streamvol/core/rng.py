"""Keyed randomness: every draw comes from a generator seeded by integers and sample keys, never
from global state, so a sample's draws are the same in any process, worker or restart."""

from __future__ import annotations

import hashlib

import numpy as np


def key_hash(key: str) -> int:
    """A stable 64-bit hash of a sample key (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def keyed_rng(*words: int) -> np.random.Generator:
    """A generator keyed by integers (seed, epoch, stream id, ...)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFFFFFF for w in words])
    )


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator every random draw of one sample in one epoch comes from."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, key_hash(key)]))
