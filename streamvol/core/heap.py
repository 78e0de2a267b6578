"""Freed memory kept in the process for the next sample or step instead of glibc returning it
to the system at every free (glibc's ``mallopt``; elsewhere nothing changes).

Past glibc's mmap threshold (at most 32 MB) every block is mapped afresh and unmapped when
freed, and freed memory at the top of the heap is trimmed away: each sample's multi-MB block,
and each step's activations (hundreds of MB), have their pages faulted in and zeroed again at
every use, as system time. What jemalloc or tcmalloc do for PyTorch, without installing
either; the price is memory that stays with the process (``benchmarks/cpu_malloc.py``).
``STREAMVOL_KEEP_FREED_MEMORY=0`` leaves glibc as it is."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Literal

Kept = Literal["samples", "steps"]

# glibc's mmap and trim thresholds: its defaults, a loader's sample blocks (served from the
# heap up to 32 MiB, up to 128 MiB of freed memory kept), a step's activations (-1: no limit,
# mallopt(3): nothing mapped apart, the heap never trimmed, since a 2 GiB trim threshold, C's
# largest int, still gave back gigabytes of a U-Net step on 64^3 crops, to fault in again)
_THRESHOLDS = {None: (128 << 10, 128 << 10), "samples": (32 << 20, 128 << 20), "steps": (-1, -1)}
_ORDER = tuple(_THRESHOLDS)  # from glibc's defaults to the most kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h

_kept: Kept | None = None  # what this process keeps


def keep_freed_memory(what: Kept = "steps", *, fresh: bool = False) -> bool:
    """Keep freed memory for ``what`` comes next in this process: ``samples`` (a loader's
    blocks) or ``steps`` (a network's activations as well); never less than the process
    already keeps, unless ``fresh``: a forked loader worker, which first gives back the freed
    memory it inherited (a CPU trainer's, gigabytes: kept, its pages would stay the worker's
    while the trainer, writing to them, copies each one). True where kept (glibc, and not
    ``STREAMVOL_KEEP_FREED_MEMORY=0``)."""
    global _kept
    if os.environ.get("STREAMVOL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if not fresh and _ORDER.index(_kept) >= _ORDER.index(what):
        return True
    if not _set(*_THRESHOLDS[what]):
        return False
    if fresh:
        ctypes.CDLL(None).malloc_trim(0)  # every arena's free pages, not only the heap's top
    _kept = what
    return True


def kept() -> Kept | None:
    """What this process keeps (None: glibc's defaults)."""
    return _kept


def give_freed_memory_back() -> None:
    """Undo ``keep_freed_memory``: glibc's default thresholds (128 KiB) again."""
    global _kept
    if _set(*_THRESHOLDS[None]):
        _kept = None


def _set(mmap_threshold: int, trim_threshold: int) -> bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the loaded C library
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
