"""A finished run folder, put to use: its task, its model as a ``Predictor``, and whole-volume
prediction with it (``streamvol predict RUN SOURCE...``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamvol.core.manifest import read_manifest
from streamvol.predict import Predictor
from streamvol.predict import predict_volumes as _predict_volumes
from streamvol.train.config import TrainConfig


def run_task(run: str | Path, storage_options: dict[str, Any] | None = None) -> str:
    """The task a run folder was trained for (resolving ``auto`` from its shard set, read with
    fsspec ``storage_options`` when it is a URL)."""
    config = TrainConfig.load(Path(run) / "config.json")
    if config.task != "auto":
        return config.task
    return read_manifest(config.shards, storage_options)["task"]


def load_predictor(run: str | Path, *, device: str | None = None) -> Predictor:
    """The run's best weights (EMA when it kept them) as a ``Predictor``."""
    from streamvol.train.loop import Trainer

    config = TrainConfig.load(Path(run) / "config.json")
    if device:
        config = replace(config, device=device)
    return Predictor.from_trainer(Trainer.for_evaluation(config, run))


def predict_volumes(
    run: str | Path,
    sources: Sequence[str | Path] | None,
    out: str | Path,
    *,
    device: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Predict whole volumes with a run's model: ``sources`` (None: the tomograms of the run's
    ``split``) into ``out``; ``options`` as ``streamvol.predict.predict_volumes`` takes them."""
    return _predict_volumes(load_predictor(run, device=device), run, sources, out, **options)
