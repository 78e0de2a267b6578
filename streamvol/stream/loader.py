"""``streamvol.loader``: a DataLoader over a ``StreamDataset`` with the right collate, worker
setup, exact length, and resume (it records which samples reached the trainer)."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from streamvol.stream import slots
from streamvol.stream.dataset import StreamDataset, batch_buffer
from streamvol.stream.epoch import balanced


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``: uncopied when the tensors already lie one after another in one buffer
    (``StreamDataset`` writes augmented images straight into ``batch_buffer`` slots), else
    straight into shared memory inside a loader worker, so the batch crosses uncopied."""
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
    return torch.stack(tensors, out=out)


_IN_LOADER_WORKER = False  # set in the workers of a StreamLoader, whose main side unwires


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch; points are padded to the longest with ``points_count``.

    ``__timing__`` holds the seconds this batch's samples spent in each stage of the worker
    that made it (read + decode, prepare/augment, collate), for ``streamvol bench``. In the
    workers of ``streamvol.loader`` small tensors leave as numpy arrays (``_wire``) and images
    and masks with their slot tags (``slots``); the loader makes them the batch again.
    """
    started = time.perf_counter()
    first = samples[0]
    for sample in samples[1:]:
        if sample.keys() != first.keys():
            raise ValueError(
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
    if not _IN_LOADER_WORKER:  # the main process, or a plain DataLoader's worker
        return batch
    sent = {k: v if k in ("image", "mask") else _wire(v) for k, v in batch.items()}
    held = {k: slots.tag(batch[k]) for k in ("image", "mask") if k in batch}
    sent["__slots__"] = {k: t for k, t in held.items() if t is not None}
    return sent


WIRE_BYTES = 64 << 10


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


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Have glibc serve allocations under 32 MiB from its heap and keep up to 128 MiB of freed
    memory instead of returning it to the system (once per process; False off glibc).

    Every sample brings a multi-MB block and leaves a 1 MB output; glibc's default maps each of
    them afresh and unmaps it when freed, so every page is faulted in again: ~700 faults per
    112^3 uint16 block, which in a VM cost as much time as augmenting it. The price is memory
    that stays with the process (the same trade as setting ``MALLOC_MMAP_THRESHOLD_``).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _MALLOC_TUNED = bool(
        mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 128 << 20)
    )
    return _MALLOC_TUNED


def worker_init(_: int) -> None:
    """One thread per loader worker (the workers are the parallelism, no oversubscription);
    freed sample memory kept for reuse (``keep_freed_memory``); batches written into reused
    shared memory (``slots``) and sent the way ``StreamLoader`` receives them (``collate``)."""
    global _IN_LOADER_WORKER
    _IN_LOADER_WORKER = True
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, StreamDataset):
        slots.use(info.dataset.slot_table, info.id)
    keep_freed_memory()
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    # after numba: starting its OpenMP thread pool sets OpenMP's thread count back to all cores,
    # and a worker forked from a process that had run OpenMP regions hangs in its first parallel
    # torch op (a batch's torch.stack) when that count is above 1
    torch.set_num_threads(1)


class StreamLoader:
    """Batches from a ``StreamDataset``; knows its exact length and can resume mid-epoch."""

    def __init__(
        self,
        dataset: StreamDataset,
        batch_size: int,
        num_workers: int = 0,
        *,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected at least 1")
        self.dataset = dataset
        self.batch_size = batch_size
        dataset.batch_size = batch_size  # its workers then write images straight into batches
        self.num_workers = num_workers
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate,
            worker_init_fn=worker_init if num_workers else None,
            persistent_workers=persistent_workers and num_workers > 0,
            pin_memory=pin,
            prefetch_factor=prefetch_factor if num_workers else None,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            keep_freed_memory()  # this process makes the samples
        self.dataset.begin_pass()
        for batch in self.loader:
            if self.num_workers:
                batch = slots.adopt(_unwire(batch), self.dataset.slot_table)
            self.dataset.mark_consumed(batch["__pos__"].tolist())
            yield batch
        if not self.loader.persistent_workers:  # their workers, and so their slots, are gone
            self.dataset.slot_table.mapped.clear()

    def __len__(self) -> int:
        """Batches in what remains of the epoch (a full epoch when nothing was consumed)."""
        remaining = len(self.dataset.remaining) or len(self.dataset)
        workers = max(self.num_workers, 1)
        sizes = [balanced(remaining, workers, w) for w in range(workers)]
        return int(sum(-(-(s.stop - s.start) // self.batch_size) for s in sizes))

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def loader(
    dataset: StreamDataset,
    batch_size: int,
    num_workers: int = 0,
    **options: Any,
) -> StreamLoader:
    """A DataLoader for ``dataset``: collate with padded points, one thread per worker,
    persistent workers, pinned memory when CUDA is there; ``len()`` is exact. The processes that
    make samples keep freed memory for the next ones (``keep_freed_memory``)."""
    return StreamLoader(dataset, batch_size, num_workers, **options)
