"""Streaming loader: exact, deterministic, resumable epochs over WebDataset shards."""

from streamvol.stream.dataset import (
    Prepare,
    StreamDataset,
    key_hash,
    open_shards,
    sample_rng,
)
from streamvol.stream.loader import StreamLoader, collate, loader
from streamvol.stream.prefetch import DevicePrefetcher

__all__ = [
    "DevicePrefetcher",
    "Prepare",
    "StreamDataset",
    "StreamLoader",
    "collate",
    "key_hash",
    "loader",
    "open_shards",
    "sample_rng",
]
