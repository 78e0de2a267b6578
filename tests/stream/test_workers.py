"""Loader workers never hang, say which worker stalls, and resume batch for batch.

The crops here are trainer-sized (24 x 48 x 48: a batch of them is above torch's parallel grain,
which is what made a forked worker enter a dead OpenMP pool); the hang checks run in a child
process with a hard limit, so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import textwrap
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import get_worker_info

import streamvol
from streamvol.errors import LoaderTimeout
from streamvol.shard import parse_config, shard
from streamvol.stream import open_shards
from streamvol.stream.epoch import emission, loader_rng, next_worker, round_robin

from ..guard import hard_limit, run_guarded

CROP = (24, 48, 48)


def _crops(root, dtype, n=12):
    src = root / f"src-{np.dtype(dtype).name}"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(src / f"v{i:02d}.npy", (rng.random(CROP) * 1000).astype(dtype))
    out = root / f"shards-{np.dtype(dtype).name}"
    config = parse_config([src], crop=",".join(map(str, CROP)), context=0, split="0.5,0.5")
    shard(config, out, workers=1)
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    return {name: _crops(root, name) for name in ("float32", "uint16")}


def test_loaders_after_multithreaded_torch_work_finish(big):
    """The main process trains (OpenMP pool busy), then 2-worker loaders of trainer-sized crops
    run for training and for validation: every sample arrives, in a process that would hang
    forever if a forked worker entered an OpenMP region."""
    code = textwrap.dedent(
        """
        import sys, torch, streamvol
        torch.set_num_threads(2)
        def work():
            x = torch.randn(8, 1, 24, 48, 48, requires_grad=True)
            torch.nn.Conv3d(1, 4, 3)(x).sum().backward()
            torch.randn(8, 24, 48, 48).clone()
        for folder in sys.argv[1:]:
            for split in ("train", "val"):
                work()
                ds = streamvol.open_shards(folder, split=split)
                dl = streamvol.loader(ds, batch_size=4, num_workers=2)
                for epoch in range(2):
                    dl.set_epoch(epoch)
                    n = sum(len(b["__key__"]) for b in dl)
                    work()
                print(split, n)
        """
    )
    done = run_guarded(["-c", code, str(big["float32"]), str(big["uint16"])], limit=240)
    assert done.returncode == 0, done.stdout
    assert done.stdout.split() == ["train", "6", "val", "6"] * 2


def test_a_worker_runs_torch_on_one_thread():
    """A forked worker cannot use the OpenMP pool it inherited: torch must run one thread there
    after the worker's setup, which once started numba's OpenMP layer (resetting OpenMP's
    thread count behind torch's back)."""
    code = textwrap.dedent(
        """
        import torch
        torch.set_num_threads(2)
        from streamvol.stream.loader import worker_init
        worker_init(0)
        print(torch.get_num_threads())
        """
    )
    done = run_guarded(["-c", code], limit=120)
    assert done.returncode == 0 and done.stdout.split()[-1] == "1", done.stdout


@dataclass(frozen=True)
class StuckInWorker1:
    """Prepares samples as ``inner`` does, except in loader worker 1, where it never returns."""

    inner: Any

    @property
    def out_shape(self):
        return self.inner.out_shape

    def __call__(self, sample, epoch, into=None):
        info = get_worker_info()
        if info is not None and info.id == 1:
            time.sleep(3600)
        return self.inner(sample, epoch, into)


def test_a_stalled_worker_raises_naming_the_worker_and_its_stage(big):
    ds = open_shards(big["float32"], split="train")
    ds.prepare = StuckInWorker1(ds.prepare)
    dl = streamvol.loader(ds, batch_size=1, num_workers=2, timeout=2, persistent_workers=False)
    with hard_limit(60), pytest.raises(LoaderTimeout) as caught:
        list(dl)
    message = str(caught.value)
    assert "worker 1 last reached 'preparing'" in message
    assert "split 'train'" in message and "2 s" in message
    # the hung worker is gone: the next pass starts afresh and fails the same way, not worse
    with hard_limit(60), pytest.raises(LoaderTimeout):
        list(dl)


@dataclass(frozen=True)
class Slow:
    """Prepares samples as ``inner`` does, ``seconds`` later, in every loader worker."""

    inner: Any
    seconds: float

    @property
    def out_shape(self):
        return self.inner.out_shape

    def __call__(self, sample, epoch, into=None):
        if get_worker_info() is not None:
            time.sleep(self.seconds)
        return self.inner(sample, epoch, into)


def _started(before: set) -> list:
    return [p for p in multiprocessing.active_children() if p not in before]


def test_leaving_with_stops_the_workers_of_a_pass_stopped_midway(big):
    """A pass left after one batch (a trainer stopped in its step) holds its persistent
    workers: leaving ``with loader(...)`` stops them at once, instead of the garbage collector
    5 s a worker later; the next pass starts new ones and delivers the whole epoch."""
    ds = open_shards(big["float32"], split="train")
    before = set(multiprocessing.active_children())
    with streamvol.loader(ds, batch_size=1, num_workers=2) as dl:
        batches = iter(dl)
        next(batches)
        workers = _started(before)
        assert len(workers) == 2
    assert not any(w.is_alive() for w in workers)
    del batches
    dl.set_epoch(1)
    assert sum(len(b["__key__"]) for b in dl) == 6
    dl.close()
    assert not _started(before)


def test_ctrl_c_while_waiting_for_a_batch_stops_the_workers(big):
    """Ctrl-C while the main process waits for a batch: KeyboardInterrupt, and the pass's
    workers are gone with it."""
    ds = open_shards(big["float32"], split="train")
    ds.prepare = Slow(ds.prepare, 2.0)
    dl = streamvol.loader(ds, batch_size=1, num_workers=2)
    before = set(multiprocessing.active_children())
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    with hard_limit(60), pytest.raises(KeyboardInterrupt):
        list(dl)
    ctrl_c.join()
    assert not _started(before)


def test_timeout_must_not_be_negative(big):
    with pytest.raises(ValueError, match="timeout=-1"):
        streamvol.loader(open_shards(big["float32"]), batch_size=2, timeout=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_leaves_torchs_global_generator_alone(big, workers):
    """Dropout draws from torch's global generator: making loader workers must not draw from
    it, or a resumed run (which makes its workers anew) drifts from an uninterrupted one."""
    ds = open_shards(big["uint16"], split="train")
    dl = streamvol.loader(ds, batch_size=2, num_workers=workers)
    before = torch.get_rng_state()
    for epoch in range(2):
        dl.set_epoch(epoch)
        assert sum(len(b["__key__"]) for b in dl) == 6
    assert torch.equal(torch.get_rng_state(), before)
    del dl  # its persistent workers stop now, not when the test process ends


# --- resume: the rest of an epoch is batch for batch the rest of the uninterrupted one ------


def _batches(ds, workers, batch, stop=None, ahead=0):
    dl = streamvol.loader(ds, batch_size=batch, num_workers=workers, persistent_workers=False)
    got = []
    for b in dl:
        got.append(list(b["__key__"]))
        if stop is not None and len(got) == stop + ahead:
            return got[:stop], dl.state_dict(stop if ahead else None)
    return got, dl.state_dict()


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    src = tmp_path_factory.mktemp("uneven-src")
    rng = np.random.default_rng(2)
    for i in range(5):  # 5 sources x 6 crops = 30 samples in shards of 7, 7, 7, 7, 2
        np.save(src / f"v{i}.npy", rng.normal(10, 2, (4, 8, 12)).astype(np.float32))
    out = tmp_path_factory.mktemp("uneven") / "shards"
    shard(parse_config([src], crop=4, context=1, split="1", shard_size=7), out)
    return out


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("cut", [1, 3, 5])
@pytest.mark.parametrize("ahead", [0, 1])
def test_resume_makes_the_very_batches_of_the_uninterrupted_epoch(uneven, workers, cut, ahead):
    """Cut after ``cut`` batches (``ahead``: one more batch was fetched but not used, as a
    trainer that prefetches has), save, load into a fresh dataset: the rest is batch for batch
    what the uninterrupted epoch made, whichever worker's turn it was."""
    whole = open_shards(uneven, seed=4)
    whole.set_epoch(1)
    full, _ = _batches(whole, workers, 4)
    first = open_shards(uneven, seed=4)
    first.set_epoch(1)
    head, state = _batches(first, workers, 4, stop=cut, ahead=ahead)
    second = open_shards(uneven, seed=4)
    second.load_state_dict(state)
    rest, _ = _batches(second, workers, 4)
    assert head + rest == full
    assert sorted(k for b in full for k in b) == sorted(set(k for b in full for k in b))


def test_another_rank_resumes_from_rank_0s_state(uneven):
    """Under torch.distributed only rank 0 saves; rank 1 continues from its own batches."""
    full = {}
    for rank in (0, 1):
        ds = open_shards(uneven, seed=1, rank=rank, world_size=2)
        full[rank], _ = _batches(ds, 2, 3)
    _, state0 = _batches(open_shards(uneven, seed=1, rank=0, world_size=2), 2, 3, stop=3)
    resumed = open_shards(uneven, seed=1, rank=1, world_size=2)
    resumed.load_state_dict(state0)
    rest, _ = _batches(resumed, 2, 3)
    assert rest == full[1][3:]


def test_another_workers_count_still_resumes_exactly_once(uneven):
    first = open_shards(uneven, seed=2)
    head, state = _batches(first, 2, 4, stop=3)
    second = open_shards(uneven, seed=2)
    second.load_state_dict(state)
    rest, _ = _batches(second, 3, 4)
    keys = [k for b in head + rest for k in b]
    assert len(keys) == 30 and len(set(keys)) == 30


def test_a_state_of_another_seed_or_set_is_refused(uneven, big):
    state = open_shards(uneven, seed=0).state_dict()
    with pytest.raises(ValueError, match="seed"):
        open_shards(uneven, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"total|shards"):
        open_shards(big["float32"], seed=0).load_state_dict(state)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), bufsize=st.integers(0, 20), seed=st.integers(0, 2**32))
def test_emission_is_a_shuffle_buffer_order(n, bufsize, seed):
    """A permutation in which the i-th position emitted was among the first i + bufsize read
    (a buffer never holds more), unshuffled without a buffer."""
    positions = np.arange(100, 100 + n)
    order = emission(positions, bufsize, loader_rng(seed))
    assert sorted(order.tolist()) == positions.tolist()
    read_index = order - 100
    assert all(r < i + max(bufsize, 1) for i, r in enumerate(read_index))
    if bufsize <= 1:
        assert order.tolist() == positions.tolist()
    assert emission(positions, bufsize, loader_rng(seed)).tolist() == order.tolist()


def test_round_robin_skips_workers_that_ran_out():
    assert round_robin([3, 1, 2]) == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]
    assert next_worker([3, 1, 2], 3) == 0
    assert next_worker([3, 1, 2], 4) == 2
    assert next_worker([3, 1, 2], 6) == 0
