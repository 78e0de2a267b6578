"""Who reads what in an epoch: a pure function of (shard counts, seed, epoch, rank, worker).

The epoch's samples are the shards' samples in a shard order drawn from (seed, epoch). Each rank
takes a contiguous, balanced slice of that list, padded to the same length on every rank with
weight-0 copies; each worker takes a contiguous, balanced slice of what its rank has not yet
consumed. So every sample is read exactly once per epoch, whatever the number of ranks and
workers, also inside shards shared by several readers (they seek to member offsets).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamvol.core.rng import keyed_rng as loader_rng
from streamvol.errors import BadOption

SHARD_ORDER = 0x5A4D  # stream ids, so the loader's draws never coincide with augmentation's
SHUFFLE_BUFFER = 0x5B0F


@dataclass(frozen=True)
class RankPlan:
    """One rank's samples for one epoch, in reading order (padding last)."""

    shard: np.ndarray  # (n,) index into the shard list
    local: np.ndarray  # (n,) sample index inside that shard
    weight: np.ndarray  # (n,) float32: 1, or 0 for padding

    def __len__(self) -> int:
        return len(self.shard)


def balanced(n: int, parts: int, part: int) -> slice:
    """The ``part``-th of ``parts`` contiguous slices of ``range(n)``; sizes differ by at most 1."""
    return slice(part * n // parts, (part + 1) * n // parts)


def per_rank(total: int, world_size: int) -> int:
    """Samples every rank yields per epoch (padding included)."""
    return -(-total // world_size) if total else 0


def rank_plan(
    counts: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
) -> RankPlan:
    """The samples ``rank`` reads in ``epoch``; every rank gets ``per_rank(total, world_size)``."""
    if not 0 <= rank < world_size:
        raise BadOption("rank", rank, f"expected 0 <= rank < world_size={world_size}")
    counts = np.asarray(counts, dtype=np.int64)
    order = np.arange(len(counts))
    if shuffle:
        order = loader_rng(seed, epoch, SHARD_ORDER).permutation(len(counts))
    shard = np.repeat(order, counts[order])
    local = np.concatenate([np.arange(counts[s]) for s in order]) if len(order) else shard
    total = len(shard)
    span = balanced(total, world_size, rank)
    n = per_rank(total, world_size)
    real = np.arange(span.start, span.stop)
    pad = (span.stop + np.arange(n - len(real))) % max(total, 1)
    take = np.concatenate([real, pad]).astype(np.int64)
    weight = np.concatenate([np.ones(len(real)), np.zeros(len(pad))]).astype(np.float32)
    return RankPlan(shard[take], local[take], weight)


def worker_positions(remaining: np.ndarray, worker: int, num_workers: int) -> np.ndarray:
    """The positions (into the rank plan) one worker reads: a contiguous share of ``remaining``."""
    return remaining[balanced(len(remaining), num_workers, worker)]


@dataclass(frozen=True)
class Run:
    """Consecutive samples of one shard: read by one seek and one sequential pass."""

    shard: int
    start: int  # first sample index inside the shard
    positions: np.ndarray  # their positions in the rank plan

    @property
    def count(self) -> int:
        return len(self.positions)


def runs(plan: RankPlan, positions: np.ndarray) -> Iterator[Run]:
    """Group positions into runs of consecutive samples of the same shard."""
    if not len(positions):
        return
    shard = plan.shard[positions]
    local = plan.local[positions]
    breaks = np.flatnonzero((np.diff(shard) != 0) | (np.diff(local) != 1)) + 1
    for chunk in np.split(np.arange(len(positions)), breaks):
        yield Run(int(shard[chunk[0]]), int(local[chunk[0]]), positions[chunk])


# --- the order of one epoch, position by position and batch by batch ----------------------


def emission(positions: np.ndarray, bufsize: int, rng: np.random.Generator | None) -> np.ndarray:
    """``positions`` in the order a shuffle buffer of ``bufsize`` emits them when they are read
    in the given order (``rng`` None or ``bufsize`` <= 1: unshuffled).

    Computed on positions, not samples, so the order of a whole epoch is known before anything
    is read: a resumed worker emits exactly the rest of its sequence, and the main process can
    tell which batches a given number of delivered batches holds.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if rng is None or bufsize <= 1 or len(positions) < 2:
        return positions.copy()
    out = np.empty_like(positions)
    n_out = 0
    buffer = list(positions[: bufsize - 1])
    draws = rng.integers(bufsize, size=max(len(positions) - bufsize + 1, 0))
    for p, i in zip(positions[bufsize - 1 :], draws, strict=True):
        buffer.append(p)
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        out[n_out] = buffer.pop()
        n_out += 1
    out[n_out:] = np.asarray(buffer, dtype=np.int64)[rng.permutation(len(buffer))]
    return out


def worker_sequence(
    total: int,
    worker: int,
    num_workers: int,
    *,
    bufsize: int,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """The positions (into the rank plan of ``total``) one loader worker emits in a full epoch:
    a contiguous, balanced share, read in order and shuffled by a buffer of ``bufsize``."""
    share = np.arange(total, dtype=np.int64)[balanced(total, num_workers, worker)]
    return emission(share, bufsize, rng)


def round_robin(batches: Sequence[int]) -> list[tuple[int, int]]:
    """The order (worker, batch index) in which a DataLoader delivers the batches of workers
    that make ``batches[w]`` batches each: one from each worker in turn, skipping workers that
    have run out (what ``torch.utils.data.DataLoader`` does with an ``IterableDataset``)."""
    order: list[tuple[int, int]] = []
    for k in range(max(batches, default=0)):
        order += [(w, k) for w, n in enumerate(batches) if k < n]
    return order


def next_worker(batches: Sequence[int], delivered: int) -> int:
    """The worker whose batch comes next after ``delivered`` batches in ``round_robin`` order
    (0 when every batch was delivered)."""
    order = round_robin(batches)
    return order[delivered][0] if delivered < len(order) else 0
