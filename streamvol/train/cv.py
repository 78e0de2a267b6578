"""K-fold cross-validation over a shard set written with ``--folds K``: no re-sharding.

Fold k validates a model trained on the other folds; the summary is the mean +- std of every
metric over folds, and all folds' ROC curves share one plot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamvol.core.files import write_json_atomic
from streamvol.errors import RunError
from streamvol.train.config import TrainConfig
from streamvol.train.loop import Trainer


def fold_count(manifest: dict[str, Any]) -> int:
    folds = [name for name in manifest["splits"] if name.startswith("fold")]
    if len(folds) < 2:
        raise RunError(
            f"cross-validation needs a shard set written with --folds K; this one has splits "
            f"{list(manifest['splits'])}"
        )
    return len(folds)


# Report entries that are settings or bookkeeping, not metrics to average over folds.
NOT_METRICS = ("ignore_index", "parameters", "reduction", "window", "peaks", "beta", "tta")


def _metrics_only(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in NOT_METRICS}


def cross_validate(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    folds: int | None = None,
    resume: bool = False,
    on_fold: Callable[[int, dict[str, Any]], None] | None = None,
    fit: Callable[[Trainer, int, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train and validate one model per fold into ``run_dir/fold<k>``; summarise over folds.
    ``fit(trainer, fold, folds)`` trains a fold (default ``trainer.fit()``: a caller's own
    shows progress), ``on_fold(fold, report)`` follows each."""
    from streamvol.core.manifest import read_manifest
    from streamvol.metrics import plot_cv_roc, summarise_folds

    run_dir = Path(run_dir)
    available = fold_count(read_manifest(config.shards, config.storage_options))
    k = folds or available
    if not 2 <= k <= available:
        raise RunError(f"--folds {k}: the shard set has {available} folds")
    reports, predictions = [], []
    trainer = None
    for fold in range(k):
        fold_config = replace(
            config,
            train_folds=tuple(f for f in range(k) if f != fold),
            val_folds=(fold,),
            val_split=None,
        )
        trainer = Trainer(fold_config, run_dir / f"fold{fold}", resume=resume)
        report = fit(trainer, fold, k) if fit else trainer.fit()
        reports.append(report)
        if trainer.task.kind == "classification":  # for the folds' ROC curves
            predictions.append(trainer.predict())
        if on_fold:
            on_fold(fold, report)
    summary = summarise_folds([_metrics_only(r) for r in reports])
    plots = {}
    if trainer is not None and trainer.task.kind == "classification":
        plots["roc"] = str(
            plot_cv_roc(
                [p["targets"] for p in predictions],
                [p["scores"] for p in predictions],
                run_dir / "cv_roc.png",
                class_names=list(trainer.task.class_names),
                weights=[p["weights"] for p in predictions],
                title=f"ROC: {run_dir.name}, each fold's validation split ({k} folds)",
            )
        )
    result = {"folds": k, "summary": summary, "plots": plots}
    write_json_atomic(run_dir / "cv_report.json", result)
    return result
