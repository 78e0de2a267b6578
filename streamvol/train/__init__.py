"""Trainers: the loop, losses, EMA, checkpoints, evaluation, cross-validation and autoencoder
pretraining.

The names below load on first use (PEP 562), so ``streamvol.train.config`` (what the CLI reads
its option defaults from) imports without torch.
"""

from __future__ import annotations

from streamvol.core.lazy import lazy_names

_WHERE = {
    "RunError": "streamvol.errors",
    "load_predictor": "streamvol.train.runs",
    "predict_volumes": "streamvol.train.runs",
    "run_task": "streamvol.train.runs",
    "Trainer": "streamvol.train.loop",
    "TrainConfig": "streamvol.train.config",
    "evaluate": "streamvol.train.runs",
    "load_checkpoint": "streamvol.train.checkpoint",
    "save_checkpoint": "streamvol.train.checkpoint",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
