"""Trainers: the loop, losses, EMA, checkpoints, evaluation and cross-validation."""

from streamvol.errors import RunError
from streamvol.train.checkpoint import load_checkpoint, save_checkpoint
from streamvol.train.config import TrainConfig
from streamvol.train.evaluate import evaluate
from streamvol.train.loop import Trainer
from streamvol.train.runs import load_predictor, predict_volumes, run_task

__all__ = [
    "RunError",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "load_predictor",
    "predict_volumes",
    "run_task",
    "save_checkpoint",
]
