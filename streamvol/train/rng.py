"""The run's own torch random state: initial weights and dropout draw from it, and the state of
the program that runs the trainer is left as it was (no global seeding in library code).

torch's modules draw from the global generators (``nn.init`` and dropout take no generator), so
the trainer swaps its state in around its own work (``active``) and out again after, as
``torch.random.fork_rng`` does; the state is saved in checkpoints, so a resumed run draws the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["RunRng"]


class RunRng:
    """Torch random state of one run on ``device``: seeded from ``seed``, active inside
    ``with rng.active():``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.cuda_index = _cuda_index(device)
        self.cpu = torch.Generator().manual_seed(seed).get_state()
        self.cuda = (
            torch.Generator(f"cuda:{self.cuda_index}").manual_seed(seed).get_state()
            if self.cuda_index is not None
            else None
        )
        self._depth = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The global torch generators (CPU, and this run's GPU) hold the run's state inside,
        and what they held before after (nesting is allowed)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        devices = [] if self.cuda_index is None else [self.cuda_index]
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_index)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                self._take()

    def _take(self) -> None:
        self.cpu = torch.get_rng_state()
        if self.cuda_index is not None:
            self.cuda = torch.cuda.get_rng_state(self.cuda_index)

    def state_dict(self) -> dict[str, Any]:
        """The current state (also from inside ``active``, e.g. a mid-epoch checkpoint)."""
        if self._depth:
            self._take()
        return {
            "rng": self.cpu.clone(),
            "cuda_rng": None if self.cuda is None else self.cuda.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cpu = state["rng"]
        if self.cuda_index is not None and state.get("cuda_rng") is not None:
            self.cuda = state["cuda_rng"]
        if self._depth:  # restored from inside: the generators take it now
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_index)


def _cuda_index(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()
