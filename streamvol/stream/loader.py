"""``streamvol.loader``: a DataLoader over a ``StreamDataset`` with the right collate, worker
setup, exact length, and resume (it records which samples reached the trainer)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from streamvol.core.heap import keep_freed_memory
from streamvol.core.interrupt import deferred
from streamvol.errors import BadInput, BadOption, LoaderTimeout
from streamvol.stream import slots
from streamvol.stream.dataset import StreamDataset
from streamvol.stream.slots import batch_buffer


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors stacked: uncopied when they already lie one after another in one buffer
    (``StreamDataset`` writes augmented images straight into ``batch_buffer`` slots), else
    into shared memory inside a loader worker, so the batch crosses uncopied.

    The copy is numpy's, never a torch op: a loader worker is forked from a process that may
    have run OpenMP-parallel torch ops, and an OpenMP region in the child waits forever for the
    pool threads it inherited but that do not exist there (``single_threaded``)."""
    first = tensors[0]
    step = first.numel()
    if first.is_contiguous() and all(
        t.shape == first.shape
        and t.dtype == first.dtype
        and t.is_contiguous()
        and t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and t.storage_offset() == first.storage_offset() + i * step
        for i, t in enumerate(tensors)
    ):
        return first.new_empty(0).set_(
            first.untyped_storage(), first.storage_offset(), (len(tensors), *first.shape)
        )
    out = batch_buffer(len(tensors), first.shape, first.dtype)
    np.stack([t.numpy() for t in tensors], out=out.numpy())
    return out


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch; points are padded to the longest with ``points_count``.

    ``__timing__`` holds the seconds this batch's samples spent in each stage of the worker
    that made it (read + decode, prepare/augment, collate), for ``streamvol bench``.
    """
    started = time.perf_counter()
    watch = _worker_progress()
    if watch:
        watch("collating")
    first = samples[0]
    for sample in samples[1:]:
        if sample.keys() != first.keys():
            raise BadInput(
                f"samples {first['__key__']} and {sample['__key__']} carry different members "
                f"({sorted(first)} vs {sorted(sample)}); a batch needs one kind"
            )
    batch: dict[str, Any] = {
        "__key__": [s["__key__"] for s in samples],
        "__pos__": torch.tensor([s["__pos__"] for s in samples], dtype=torch.int64),
        "__epoch__": first["__epoch__"],
        "weight": torch.tensor([s["weight"] for s in samples], dtype=torch.float32),
        "image": _stack([s["image"] for s in samples]),
    }
    if "label" in first:
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.int64)
    if "mask" in first:
        batch["mask"] = _stack([s["mask"] for s in samples])
    if "points" in first:
        counts = [len(s["points"]) for s in samples]
        points = torch.zeros((len(samples), max(counts, default=0), 4), dtype=torch.float32)
        for i, s in enumerate(samples):
            points[i, : counts[i]] = s["points"]
        batch["points"] = points
        batch["points_count"] = torch.tensor(counts, dtype=torch.int64)
    if "params" in first:
        from streamvol.augment import stack_params

        batch["params"] = stack_params([s["params"] for s in samples])
    batch["__timing__"] = {
        "read": sum(s.get("__t_read__", 0.0) for s in samples),
        "augment": sum(s.get("__t_prep__", 0.0) for s in samples),
        "collate": time.perf_counter() - started,
    }
    return batch


def collate_to_send(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate`` in the workers of a ``StreamLoader``: small tensors leave as numpy arrays
    (``_wire``), images and masks with the tags of the reused slots they lie in (``slots``);
    the loader's main side makes them the batch again (``_unwire``, ``slots.adopt``)."""
    batch = collate(samples)
    sent = {k: v if k in ("image", "mask") else _wire(v) for k, v in batch.items()}
    held = {k: slots.tag(batch[k]) for k in ("image", "mask") if k in batch}
    sent["__slots__"] = {k: t for k, t in held.items() if t is not None}
    watch = _worker_progress()
    if watch:
        watch("sent a batch")
    return sent


def _worker_progress() -> Any:
    """``mark(stage)`` for this loader worker's row of its dataset's ``Progress``, or None."""
    info = get_worker_info()
    if info is None or not isinstance(info.dataset, StreamDataset):
        return None
    progress, seat = info.dataset.progress, info.id
    return lambda stage: progress.mark(seat, stage)


WIRE_BYTES = 64 << 10
DEFAULT_TIMEOUT = 600.0  # seconds without a batch before a loader gives up


def _leaves(value: Any, leaf: Any) -> Any:
    """``value`` with ``leaf`` applied to everything inside its dicts and dataclasses."""
    if isinstance(value, dict):
        return {k: _leaves(v, leaf) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return dataclasses.replace(
            value, **{f.name: _leaves(getattr(value, f.name), leaf) for f in fields}
        )
    return leaf(value)


def _small_to_numpy(value: Any) -> Any:
    small = isinstance(value, torch.Tensor) and value.numel() * value.element_size() <= WIRE_BYTES
    return value.numpy() if small and value.device.type == "cpu" else value


def _numpy_to_tensor(value: Any) -> Any:
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def _wire(value: Any) -> Any:
    """What a worker sends: tensors under ``WIRE_BYTES`` as numpy arrays, pickled by value.
    torch hands every tensor over through shared memory, one file descriptor per tensor that
    the main process fetches from the worker over a socket: for labels, weights, positions and
    augmentation parameters that round trip costs far more than their bytes (images and masks
    go through the worker's ``slots``). ``_unwire`` makes them tensors again."""
    return _leaves(value, _small_to_numpy)


def _unwire(value: Any) -> Any:
    """The batch as ``collate`` made it, from what a worker sent (``_wire``)."""
    return _leaves(value, _numpy_to_tensor)


def single_threaded() -> None:
    """One intra-op thread in this process, as a forked loader worker needs.

    The worker is forked from a process whose OpenMP pool may be busy (training runs
    multi-threaded torch ops); the pool's threads do not exist in the child, so an OpenMP
    parallel region there waits for them forever. torch runs its ops inline at one thread.
    numba's thread count is left alone on purpose: ``numba.set_num_threads`` launches numba's
    OpenMP layer, which resets OpenMP's thread count to ``NUMBA_NUM_THREADS`` behind torch's
    back (the hang of issue 12); loader workers run numba's serial kernels only.
    """
    os.environ["OMP_NUM_THREADS"] = "1"  # for libraries that read it when they start
    torch.set_num_threads(1)
    if torch.get_num_threads() != 1:
        raise RuntimeError(
            f"a loader worker runs {torch.get_num_threads()} intra-op threads after "
            "torch.set_num_threads(1); forked workers must run one"
        )


def worker_init(_: int) -> None:
    """One thread per loader worker (the workers are the parallelism, and a forked worker must
    not enter an OpenMP region: ``single_threaded``); freed sample memory kept for reuse
    (``keep_freed_memory``); batches written into reused shared memory (``slots``). Ctrl-C
    and SIGTERM end it quietly (PyTorch's worker exits on ``KeyboardInterrupt``; the main
    process, which a group's signal also reaches, stops the run), not as a crash."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    single_threaded()
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, StreamDataset):
        slots.use(info.dataset.slot_table, info.id)
        info.dataset.progress.mark(info.id, "started")
    keep_freed_memory("samples", fresh=True)  # not the steps' of a CPU trainer, its parent


class StreamLoader:
    """Batches from a ``StreamDataset``; knows its exact length and can resume mid-epoch.
    ``with loader(...) as dl:`` stops its workers on leaving the block (``close``).

    ``timeout``: seconds to wait for a batch from the workers before raising ``LoaderTimeout``
    naming the worker and the stage it last reached (0 waits forever; no effect without
    workers, where the main process makes the batches itself).
    """

    def __init__(
        self,
        dataset: StreamDataset,
        batch_size: int,
        num_workers: int = 0,
        *,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if batch_size < 1:
            raise BadOption("batch_size", batch_size, "expected at least 1")
        if timeout < 0:
            raise BadOption("timeout", timeout, "expected seconds >= 0 (0 waits forever)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.timeout = timeout
        self._pass: list[np.ndarray] = []  # positions of each batch delivered in this pass
        self._pass_start = 0  # batches of the epoch delivered before this pass
        self._running: Iterator[Any] | None = None  # the DataLoader's iterator of the pass
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_to_send if num_workers else collate,
            worker_init_fn=worker_init if num_workers else None,
            persistent_workers=persistent_workers and num_workers > 0,
            pin_memory=pin,
            prefetch_factor=prefetch_factor if num_workers else None,
            timeout=timeout if num_workers else 0,
            # the DataLoader draws its workers' base seed from this generator, not from
            # torch's global one, which the trainer's dropout uses: a resumed run must not
            # draw once more when it makes its workers anew (streamvol draws from keys)
            generator=torch.Generator().manual_seed(dataset.seed),
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            keep_freed_memory("samples")  # this process makes the samples
        ds = self.dataset
        ds.begin_pass(self.num_workers, self.batch_size)
        ds.progress.reset(self.num_workers)
        self._pass, self._pass_start = [], ds.delivered
        ds._driven = True
        try:
            # a first pass forks the workers: Ctrl-C or SIGTERM raised in a fork handler would
            # be lost (Python ignores it there), so it waits until they are started
            with deferred():
                batches = self._running = iter(self.loader)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    self.close()
                    raise
                except RuntimeError as exc:
                    if "timed out" not in str(exc):
                        raise
                    self.close()
                    raise self._timed_out() from exc
                if self.num_workers:
                    batch = slots.adopt(_unwire(batch), ds.slot_table)
                positions = batch["__pos__"].numpy().copy()
                ds.mark_consumed(positions)
                ds.mark_delivered()
                self._pass.append(positions)
                yield batch
        finally:
            ds._driven = False
            self._running = None
        if not self.loader.persistent_workers:  # their workers, and so their slots, are gone
            ds.slot_table.mapped.clear()

    def __enter__(self) -> StreamLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers now; the next pass starts new ones. For a pass that was stopped (a
        worker hangs, Ctrl-C, an error in the training step): its workers would otherwise stop
        only when the garbage collector reaches its iterator, and then after 5 s a worker."""
        running = self.loader._iterator if self._running is None else self._running
        self._running = None
        if hasattr(running, "_shutdown_workers"):
            running._shutdown_workers()
        self.loader._iterator = None

    def _timed_out(self) -> LoaderTimeout:
        """The error for a pass whose workers sent no batch for ``timeout`` seconds."""
        ds, progress = self.dataset, self.dataset.progress
        lasts = [(w, *progress.last(w)) for w in range(self.num_workers)]
        busy = [row for row in lasts if row[1] != "sent a batch"] or lasts
        worker, stage, ago, shard = max(busy, key=lambda row: row[2])
        where = f" of {ds.shards.shards[shard].url}" if shard >= 0 else ""
        others = "; ".join(
            f"worker {w}: '{s}' {a:.0f} s ago" for w, s, a, _ in lasts if w != worker
        )
        return LoaderTimeout(
            f"{ds.name}: no batch from the loader's {self.num_workers} workers for "
            f"{self.timeout:g} s; worker {worker} last reached '{stage}'{where} {ago:.0f} s "
            f"ago" + (f" ({others})" if others else "") + ". A worker stuck this long hangs "
            "(or its samples are far slower than expected: raise the timeout)"
        )

    def __len__(self) -> int:
        """Batches in what remains of the epoch (a full epoch when nothing was consumed)."""
        ds = self.dataset
        if not len(ds.remaining):  # the next pass starts a new epoch
            return sum(ds.worker_batches(max(self.num_workers, 1), self.batch_size))
        return ds.remaining_batches(max(self.num_workers, 1), self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """Where the epoch stands; with ``batches``, as it stood when only the first
        ``batches`` batches of the current pass were used (a trainer that fetches ahead saves
        the state of the batches it has stepped on)."""
        state = self.dataset.state_dict()
        if batches is None or batches >= len(self._pass):
            return state
        bits = np.unpackbits(state["consumed"].numpy())[: len(self.dataset)]
        for positions in self._pass[batches:]:
            bits[positions] = 0
        state["consumed"] = torch.from_numpy(np.packbits(bits))
        state["delivered"] = self._pass_start + batches
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def loader(
    dataset: StreamDataset,
    batch_size: int,
    num_workers: int = 0,
    **options: Any,
) -> StreamLoader:
    """A DataLoader for ``dataset``: collate with padded points, one thread per worker,
    persistent workers, pinned memory when CUDA is there; ``len()`` is exact; a worker silent
    for ``timeout`` seconds (default 600) raises ``LoaderTimeout``. The processes that make
    samples keep freed memory for the next ones (``keep_freed_memory``)."""
    return StreamLoader(dataset, batch_size, num_workers, **options)
