"""The bare streamvol CPU kernel as a loader-like source of batches: ``apply_cpu`` on stored
blocks already in memory with parameters drawn beforehand (no read, decode, draw or collate), in
one process (1 or N numba threads) or over N forked processes of one thread each."""

from __future__ import annotations

import io
import multiprocessing
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from _loaders.workload import augment_spec, single_thread

_BLOCKS: list[tuple[np.ndarray, Any]] = []  # (stored block, drawn params), inherited by fork
_NORM: tuple[float, float] = (0.0, 1.0)


def load_blocks(
    shards: Path, size: int, limit: int, norm: tuple[float, float], draws: int = 32
) -> None:
    """``limit`` stored blocks straight from the tars into memory, cycled through ``draws``
    parameter draws, normalised by ``norm`` (offset, scale) as the loaders are. Few blocks, so
    they stay in the CPU's caches as the block a loader has just read does: the kernel at its
    best, an upper bound for the loader. Set before the worker processes fork."""
    global _BLOCKS, _NORM
    _NORM = norm
    spec = augment_spec()
    rng = np.random.default_rng(0)
    blocks = []
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".image.npy") and len(blocks) < limit:
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    blocks.append(np.load(io.BytesIO(raw), allow_pickle=False))
    _BLOCKS = [
        (b, spec.sample(rng, b.shape, (size, size, size)))
        for b in (blocks[i % len(blocks)] for i in range(draws))
    ]


def kernel_pass(args: tuple[int, int, int]) -> int:
    """Apply the kernel to ``count`` samples from ``start``; returns how many it did."""
    from streamvol.augment import apply_cpu

    start, count, threads = args
    for i in range(start, start + count):
        block, params = _BLOCKS[i % len(_BLOCKS)]
        apply_cpu({"image": block}, params, offset=_NORM[0], scale=_NORM[1], threads=threads)
    return count


class KernelBatches:
    """Batches of ``batch`` kernel applications: in-process (1 or N numba threads) or split
    over N forked processes of one thread each, so a Case can time it like a loader."""

    def __init__(self, batch: int, processes: int = 1, threads: int = 1) -> None:
        self.batch, self.threads = batch, threads
        self.pool = None
        if processes > 1:
            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(processes, initializer=single_thread)
        self.processes = processes
        self.done = 0

    def __iter__(self) -> Iterator[int]:
        while True:
            if self.pool is None:
                yield kernel_pass((self.done, self.batch, self.threads))
            else:
                n, p = self.batch, self.processes
                parts = [
                    (self.done + k * n // p, (k + 1) * n // p - k * n // p, 1) for k in range(p)
                ]
                yield sum(self.pool.map(kernel_pass, parts))
            self.done += self.batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
