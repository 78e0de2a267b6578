"""A finished run folder, put to use: its task, its best weights evaluated on a split
(``streamvol evaluate``), each crop's prediction as CSV, its model as a ``Predictor``, and
whole-volume prediction with it (``streamvol predict RUN [SOURCE...]``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.core.files import atomic_file
from streamvol.core.manifest import check_manifest, read_manifest
from streamvol.errors import RunError
from streamvol.predict import Predictor
from streamvol.predict import predict_volumes as _predict_volumes
from streamvol.train.config import TrainConfig
from streamvol.train.evaluation import saved_threshold, tta_prefix, write_report
from streamvol.train.loop import RUN_MANIFEST, Trainer


def run_task(run: str | Path, storage_options: dict[str, Any] | None = None) -> str:
    """The task a run folder was trained for (resolving ``auto`` from its shard set's manifest:
    the run's copy, else the set's, read with fsspec ``storage_options`` when it is a URL)."""
    config = TrainConfig.load(Path(run) / "config.json")
    if config.task != "auto":
        return config.task
    return (trained_manifest(run) or read_manifest(config.shards, storage_options))["task"]


def trained_manifest(run: str | Path) -> dict[str, Any] | None:
    """The manifest of the shard set the run trained on, as the run kept it (None where an
    older streamvol kept none)."""
    path = Path(run) / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        return check_manifest(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: corrupt ({exc}); copy the shard set's manifest.json here") from exc


def _trainer(run: str | Path, manifest: dict[str, Any] | None = None, **changes: Any) -> Trainer:
    """A trainer holding the run's best weights, its configuration with ``changes`` (those not
    None; ``storage_options`` always, as credentials are never saved with a run)."""
    config = TrainConfig.load(Path(run) / "config.json")
    storage = changes.pop("storage_options", None)
    config = replace(
        config, storage_options=storage, **{k: v for k, v in changes.items() if v is not None}
    )
    return Trainer.for_evaluation(config, run, manifest)


def load_predictor(
    run: str | Path,
    *,
    device: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Predictor:
    """The run's best weights (EMA when it kept them) as a ``Predictor``, with the manifest
    the run kept: its shard set need not be reachable (``storage_options``: to read the set's,
    for a run that kept none)."""
    return Predictor.from_trainer(
        _trainer(run, trained_manifest(run), device=device, storage_options=storage_options)
    )


def predict_volumes(
    run: str | Path,
    sources: Sequence[str | Path] | None,
    out: str | Path,
    *,
    device: str | None = None,
    storage_options: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Predict whole volumes with a run's model: ``sources`` (None: the tomograms of the run's
    ``split``) into ``out``; ``options`` as ``streamvol.predict.predict_volumes`` takes them."""
    predictor = load_predictor(run, device=device, storage_options=storage_options)
    return _predict_volumes(predictor, run, sources, out, **options)


def evaluate(
    run: str | Path,
    *,
    split: str = "test",
    tta: str | bool | None = None,
    device: str | None = None,
    timeout: float | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score a run's best checkpoint on ``split`` with the threshold chosen on validation
    (``tta``: ``flips``, ``rot90z`` or ``all``, True for flips; ``timeout``: the loader's,
    default the run's; ``storage_options`` for URL shards; ``progress(done, total)`` after each
    batch)."""
    trainer = _trainer(run, device=device, loader_timeout=timeout, storage_options=storage_options)
    prefix = tta_prefix(split, tta)
    return write_report(trainer, split=split, prefix=prefix, tta=tta, progress=progress)


def predict_run(
    run: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    shards: str | None = None,
    tta: str | bool | None = None,
    timeout: float | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a CSV of every sample's key, weight, class scores, predicted class and, where the
    shards hold one, its true class (for segmentation: the predicted foreground fraction, and
    the true one where there is a mask) for ``split`` of the run's or other shards
    (``progress(done, total)`` after each batch)."""
    run = Path(run)
    trainer = _trainer(
        run,
        shards=str(shards) if shards else None,
        loader_timeout=timeout,
        storage_options=storage_options,
    )
    if trainer.task.kind == "detection":
        raise RunError(
            f"{run}: a detection run predicts whole tomograms, not crops; use "
            "streamvol.train.predict_volumes (streamvol predict RUN [SOURCE...])"
        )
    if trainer.task.kind == "reconstruction":
        raise RunError(
            f"{run}: a pretraining run reconstructs crops; fine-tune it first "
            f"(streamvol train SHARDS --pretrained {run / 'best.pt'})"
        )
    result = trainer.predict(split, tta=tta, progress=progress)
    names = trainer.task.class_names
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "w", newline="") as f:
        writer = csv.writer(f)
        rows = zip(
            result["keys"], result["weights"], result["scores"], result["targets"], strict=True
        )
        if trainer.task.kind == "segmentation":
            labelled = bool((result["targets"] >= 0).all())
            writer.writerow(
                ["key", "weight", "foreground_fraction"]
                + (["true_foreground_fraction"] if labelled else [])
            )
            for key, w, labels, truth in rows:
                true = [float((truth > 0).mean())] if labelled else []
                writer.writerow([key, w, float((labels > 0).mean()), *true])
        else:
            labelled = bool((result["targets"] >= 0).all())
            threshold = saved_threshold(run)
            columns = [f"p_{names[1]}"] if trainer.task.binary else [f"p_{n}" for n in names]
            writer.writerow(
                ["key", "weight", *columns, "predicted"] + (["label"] if labelled else [])
            )
            for key, w, s, truth in rows:
                true = [names[int(truth)]] if labelled else []
                if trainer.task.binary:
                    writer.writerow([key, w, float(s), names[int(s >= threshold)], *true])
                else:
                    writer.writerow([key, w, *map(float, s), names[int(np.argmax(s))], *true])
    return out
