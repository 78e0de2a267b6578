"""Small pieces the loop, evaluation, detection and pretraining share (they import this; it
imports none of them, so the train package has no import cycles)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def counted(
    batches: Iterator[dict[str, Any]], total: int, progress: Callable[[int, int], None] | None
) -> Iterator[dict[str, Any]]:
    """``batches``, calling ``progress(done, total)`` at the start and as each one is handled."""
    if progress is None:
        yield from batches
        return
    progress(0, total)
    for done, batch in enumerate(batches, start=1):
        yield batch
        progress(done, total)


def plot_curves(history: list[dict[str, Any]], run: Path) -> Path:
    """Loss curves and the validation metrics per epoch (not throughput or learning rate)."""
    from streamvol.metrics import plot_history

    metrics = sorted({k for h in history for k in h if k.startswith("val_") and "loss" not in k})
    title = f"{run.name}: training and validation by epoch"
    return plot_history(history, run / "curves.png", metrics=metrics or None, title=title)


def identity(trainer: Any) -> dict[str, Any]:
    """The model's name and parameter count (trainable and frozen, not buffers), which every
    report carries: ``compare`` tabulates them."""
    from streamvol.train.setup import model_name

    parameters = sum(p.numel() for p in trainer.model.parameters())
    return {"model": model_name(trainer.config, trainer.task), "parameters": int(parameters)}
