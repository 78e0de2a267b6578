"""``DevicePrefetcher``: move batches to the device one step ahead, and augment them there.

On CUDA it copies pinned tensors with ``non_blocking`` on a side stream while the trainer works
on the previous batch, and applies the GPU augmentation backend on that stream. On a CPU device
it is a pass-through (still applying the augmentation when the workers only decoded).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from streamvol.stream.prepare import Normalize


def _to(batch: dict[str, Any], device: torch.device, non_blocking: bool) -> dict[str, Any]:
    out = {}
    for name, value in batch.items():
        movable = isinstance(value, torch.Tensor) or (name == "params" and hasattr(value, "to"))
        out[name] = value.to(device, non_blocking=non_blocking) if movable else value
    return out


class DevicePrefetcher:
    """Iterate batches on ``device``; batches that carry ``params`` (GPU augmentation) are
    augmented there and normalised by ``normalize``, by default the loader's dataset's."""

    def __init__(
        self,
        batches: Iterable[dict[str, Any]],
        device: str | torch.device = "cuda",
        *,
        normalize: Normalize | None = None,
    ) -> None:
        self.batches = batches
        self.device = torch.device(device)
        if normalize is None:
            normalize = getattr(getattr(batches, "dataset", None), "normalize", Normalize())
        self.normalize = normalize
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "params" in batch:
            from streamvol.augment import apply_gpu

            params = batch.pop("params")
            norm = self.normalize
            done = apply_gpu(batch, params, offset=norm.offset, scale=norm.scale)
            batch.update(done)
        return batch

    def _move(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Copy to the device and augment there; the seconds spent go to ``__timing__["h2d"]``
        (launch time on CUDA, where the copy itself is asynchronous)."""
        started = time.perf_counter()
        ready = self._finish(_to(batch, self.device, self.cuda))
        if "__timing__" in ready:
            ready["__timing__"] = {**ready["__timing__"], "h2d": time.perf_counter() - started}
        return ready

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.cuda:
            for batch in self.batches:
                yield self._move(batch)
            return
        stream = torch.cuda.Stream(device=self.device)
        pending = None
        for batch in self.batches:
            with torch.cuda.stream(stream):
                ready = self._move(batch)
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for value in ready.values():
                if isinstance(value, torch.Tensor):
                    value.record_stream(torch.cuda.current_stream(self.device))
            pending = ready
        if pending is not None:
            yield pending
