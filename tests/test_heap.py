"""Freed memory kept in the process (``streamvol.core.heap``): what glibc keeps for a loader's
samples and for a network's steps, which setting wins when both are asked for, and undoing it.
Each case runs in a fresh process (the setting is process-wide) and reads the program break:
blocks are allocated and freed without being touched, so gigabytes cost no memory."""

from __future__ import annotations

import multiprocessing as mp
import platform

import pytest

from streamvol.core.heap import Kept

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

Call = tuple[str, Kept | None, bool]  # ("keep", what, fresh) or ("give", None, False)


def _heap(calls: list[Call], block_mib: int, blocks: int, env: str = "1") -> tuple[bool, int, int]:
    """After ``calls``: the last answer, the MiB the heap grew by for ``blocks`` blocks of
    ``block_mib`` (0: each mapped apart), and the MiB it still holds once they are freed (0:
    trimmed)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_probe, (calls, block_mib, blocks, env))


def _probe(calls: list[Call], block_mib: int, blocks: int, env: str) -> tuple[bool, int, int]:
    import ctypes
    import os

    os.environ["STREAMVOL_KEEP_FREED_MEMORY"] = env
    from streamvol.core import heap

    answer = False
    for call, what, fresh in calls:
        if call == "keep":
            answer = heap.keep_freed_memory(what, fresh=fresh)
        else:
            heap.give_freed_memory_back()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
    start = libc.sbrk(0)
    held = [libc.malloc(block_mib << 20) for _ in range(blocks)]
    grown = libc.sbrk(0) - start
    for block in held:
        libc.free(block)
    return answer, round(grown / 2**20), round((libc.sbrk(0) - start) / 2**20)


def test_steps_keep_every_freed_block_however_large():
    """A U-Net step on 64^3 crops frees gigabytes at the heap's top: all of it stays (a 2 GiB
    trim threshold, C's largest int, gave it back at every step), and a block of 3 GiB comes
    from the heap too, not mapped apart."""
    answer, grown, held = _heap([("keep", "steps", False)], 600, 5)
    assert answer and grown >= 3000 and held >= 3000
    _, grown, held = _heap([("keep", "steps", False)], 3072, 1)
    assert grown >= 3072 and held >= 3072


def test_samples_keep_blocks_up_to_32_mib_and_128_mib_of_them():
    answer, grown, held = _heap([("keep", "samples", False)], 20, 5)
    assert answer and grown >= 100 and held >= 100
    _, grown, held = _heap([("keep", "samples", False)], 20, 10)  # 200 MiB freed: trimmed
    assert grown >= 200 and held < 5
    _, grown, _ = _heap([("keep", "samples", False)], 40, 2)  # mapped apart
    assert grown < 5


def test_a_process_keeps_the_most_it_was_asked_for_unless_fresh():
    """A CPU trainer making its own samples (``--workers 0``): the loader's setting does not
    replace the steps'; a loader worker forked from that trainer keeps what samples need."""
    steps = [("keep", "steps", False)]
    answer, grown, held = _heap([*steps, ("keep", "samples", False)], 600, 5)
    assert answer and grown >= 3000 and held >= 3000
    worker = [*steps, ("keep", "samples", True)]
    answer, grown, held = _heap(worker, 20, 10)
    assert answer and grown >= 200 and held < 5
    assert _heap(worker, 40, 2)[1] < 5


def test_giving_back_restores_glibcs_defaults_and_the_variable_leaves_them():
    for calls, env in (
        ([("keep", "steps", False), ("give", None, False)], "1"),
        ([("keep", "samples", False)], "0"),  # STREAMVOL_KEEP_FREED_MEMORY=0
    ):
        _, grown, _ = _heap(calls, 20, 5, env)
        assert grown < 5  # mapped apart, past 128 KiB
    assert _heap([("keep", "steps", False)], 20, 5, env="0")[0] is False
    # kept again after giving back
    answer, grown, held = _heap(
        [("keep", "steps", False), ("give", None, False), ("keep", "samples", False)], 20, 5
    )
    assert answer and grown >= 100 and held >= 100


def _resident_after_fresh(fresh: bool) -> tuple[int, int]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_probe_resident, (fresh,))


def _probe_resident(fresh: bool) -> tuple[int, int]:
    """MiB resident with 300 MiB freed inside a trainer's heap (a block freed below one still
    held, so no trimming of the top reaches it), before and after the samples' level is set."""
    import ctypes

    from streamvol.core import heap

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 >> 20

    heap.keep_freed_memory("steps")
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    freed, held = libc.malloc(300 << 20), libc.malloc(1 << 20)
    ctypes.memset(freed, 1, 300 << 20)
    ctypes.memset(held, 1, 1 << 20)
    libc.free(freed)
    before = resident()
    heap.keep_freed_memory("samples", fresh=fresh)
    return before, resident()


def test_a_fresh_worker_gives_back_the_freed_memory_it_inherited():
    """A loader worker forked from a CPU trainer drops the trainer's freed pages (kept, they
    would stay the worker's while the trainer copies each one it writes to again); the
    trainer itself, asking for samples, keeps them."""
    before, after = _resident_after_fresh(fresh=True)
    assert before - after >= 290
    before, after = _resident_after_fresh(fresh=False)
    assert abs(before - after) < 5
