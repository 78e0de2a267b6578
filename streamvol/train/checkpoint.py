"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain containers (model, optimizer, scheduler, EMA, scaler,
loader state, epoch, metrics), so it never needs unpickling of arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from streamvol.core.files import atomic_file
from streamvol.core.interrupt import deferred
from streamvol.errors import CheckpointError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename. Ctrl-C or SIGTERM
    waits until the file is written (torch's zip writer, stopped midway, fails with an error
    of its own instead of the interrupt)."""
    path = Path(path)
    with deferred(), atomic_file(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), naming the file on any failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: expected a streamvol checkpoint with a 'model' entry")
    return state
