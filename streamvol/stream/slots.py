"""Batch memory that loader workers reuse instead of allocating it afresh for every batch.

A worker hands each batch to the main process through shared memory. Fresh shared memory for
every batch, as torch's ``default_collate`` takes it, costs ~4 ms per 8 MB here (creating the
segment and faulting in each of its pages): half a millisecond per 64^3 float32 sample. Each
worker instead keeps up to ``SLOTS`` segments and writes a batch into a free one. The main process
frees the segment when the last tensor over it is gone (a finalizer on the array its tensor is
made from), by clearing the slot's token in a table every process shares; a token is written
only into a free slot and cleared only by the holder of that token, so a release that comes late
(after the worker restarted, say) never frees a slot that holds a newer batch. When every slot is
held, by a trainer that keeps batches, the worker takes fresh memory as before. The main process
keeps each slot's segment mapped between batches, so reading a batch faults in no pages either.
"""

from __future__ import annotations

import math
import multiprocessing
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MAX_WORKERS, SLOTS = 64, 6


class SlotTable:
    """The token of every (worker, slot) in use, 0 when free; made in the main process before
    the workers start (they inherit it), one per dataset."""

    def __init__(self) -> None:
        self.tokens = multiprocessing.RawArray("I", MAX_WORKERS * SLOTS)
        self.counters = multiprocessing.RawArray("I", MAX_WORKERS)
        # main process: the last tensor received from each slot, so its segment stays mapped
        # (torch then maps a slot's segment once, not once per batch, with all its page faults)
        self.mapped: dict[int, torch.Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "counters": self.counters, "mapped": {}}

    def view(self) -> np.ndarray:
        return np.frombuffer(self.tokens, dtype=np.uint32)

    def release(self, index: int, token: int) -> None:
        """Free slot ``index`` if it still holds ``token``."""
        tokens = self.view()
        if tokens[index] == token:
            tokens[index] = 0


class WorkerSlots:
    """One worker's segments, made as they are first needed and kept for the worker's life."""

    def __init__(self, table: SlotTable, worker: int) -> None:
        self.table, self.worker = table, worker
        self.storages: list[torch.UntypedStorage | None] = [None] * SLOTS
        self.tags: dict[int, tuple[int, int]] = {}  # segment address -> (index, token)

    def take(self, nbytes: int) -> torch.UntypedStorage | None:
        """A free segment of at least ``nbytes``, now marked in use; None when all are held."""
        if self.worker >= MAX_WORKERS:
            return None
        tokens = self.table.view()
        for i in range(SLOTS):
            index = self.worker * SLOTS + i
            if tokens[index]:
                continue
            storage = self.storages[i]
            if storage is None or storage.nbytes() < nbytes:
                if storage is not None:
                    self.tags.pop(storage.data_ptr(), None)
                storage = self.storages[i] = torch.UntypedStorage._new_shared(nbytes)
            token = int(self.table.counters[self.worker]) % 0xFFFFFFFF + 1
            self.table.counters[self.worker] = token
            tokens[index] = token
            self.tags[storage.data_ptr()] = (index, token)
            return storage
        return None


_WORKER: WorkerSlots | None = None


def use(table: SlotTable, worker: int) -> None:
    """Called in a loader worker: its batches come from ``table``'s slots from now on."""
    global _WORKER
    if _WORKER is None or _WORKER.table is not table or _WORKER.worker != worker:
        _WORKER = WorkerSlots(table, worker)


def buffer(n: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty (n, *shape) tensor in shared memory: a free slot of this worker's, else fresh."""
    nbytes = n * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    storage = _WORKER.take(nbytes) if _WORKER is not None else None
    if storage is None:
        storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (n, *shape))


def batch_buffer(n: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty (n, *shape) tensor; inside a loader worker in shared memory (one of the
    worker's reused segments when ``use`` was called), so it reaches the main process uncopied."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return torch.empty((n, *shape), dtype=dtype)
    return buffer(n, shape, dtype)


def tag(tensor: torch.Tensor) -> tuple[int, int] | None:
    """(slot index, token) of a batch tensor that lies in one of this worker's slots."""
    if _WORKER is None:
        return None
    return _WORKER.tags.get(tensor.untyped_storage().data_ptr())


def adopt(batch: dict[str, Any], table: SlotTable) -> dict[str, Any]:
    """In the main process: each tensor a worker sent from a slot (``batch["__slots__"]``) comes
    back as a tensor whose last view frees the slot when it is gone; a pinned copy (the
    DataLoader's ``pin_memory``) frees it at once."""
    for key, (index, token) in batch.pop("__slots__", {}).items():
        received = batch[key]
        if received.is_pinned():
            table.release(index, token)
            continue
        table.mapped[index] = received
        array = received.numpy()
        batch[key] = torch.from_numpy(array)  # the new tensor's storage owns ``array``
        weakref.finalize(array, table.release, index, token)
    return batch
