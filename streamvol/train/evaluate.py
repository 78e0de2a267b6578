"""Evaluation: predictions over a split (optionally with test-time augmentation), scikit-learn
metrics, the validation threshold sweep, and the report with its plots."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.core.files import atomic_file, write_json_atomic

# The 8 flips of the three axes: each is its own inverse, so TTA maps predictions back exactly.
TTA_FLIPS = tuple(
    tuple(d for d, f in zip((2, 3, 4), bits, strict=True) if f)
    for bits in itertools.product((0, 1), repeat=3)
)


def _probabilities(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        return torch.sigmoid(logits.reshape(logits.shape[0]))
    return torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    task: Any,
    *,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    tta: bool = False,
    loss_fn: Any = None,
) -> dict[str, Any]:
    """Run ``model`` over batches; return scores, targets, weights, keys and the mean loss.

    Classification scores are probabilities ((N,) positive class when binary, else (N, C));
    segmentation keeps the predicted labels (N, D, H, W). With ``tta`` the 8 axis flips are
    averaged (segmentation probabilities flipped back before averaging).
    """
    model.eval()
    binary = task.binary
    scores, targets, weights, keys = [], [], [], []
    loss_sum, weight_sum = 0.0, 0.0
    for batch in batches:
        x = batch["image"]
        flips = TTA_FLIPS if tta else ((),)
        probs = None
        for dims in flips:
            logits = forward(model, x.flip(dims) if dims else x).float()
            if loss_fn is not None and not dims:
                target = batch["mask"] if task.kind == "segmentation" else batch["label"]
                loss = loss_fn(logits, target, batch["weight"])
                loss_sum += float(loss) * float(batch["weight"].sum())
                weight_sum += float(batch["weight"].sum())
            p = _probabilities(logits, binary and task.kind == "classification")
            if task.kind == "segmentation":
                p = torch.softmax(logits, dim=1) if logits.shape[1] > 1 else torch.sigmoid(logits)
                p = p.flip(dims) if dims else p
            probs = p if probs is None else probs + p
        probs = probs / len(flips)
        if task.kind == "segmentation":
            labels = probs.argmax(1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5).long()
            scores.append(labels.cpu().numpy())
            targets.append(batch["mask"].cpu().numpy())
        else:
            scores.append(probs.cpu().numpy())
            targets.append(batch["label"].cpu().numpy())
        weights.append(batch["weight"].cpu().numpy())
        keys += batch["__key__"]
    if not keys:
        raise ValueError("the evaluation split yielded no samples")
    return {
        "scores": np.concatenate(scores),
        "targets": np.concatenate(targets),
        "weights": np.concatenate(weights),
        "keys": keys,
        "loss": loss_sum / max(weight_sum, 1.0),
    }


def score(out: dict[str, Any], task: Any, *, threshold: float | None = 0.5) -> dict[str, Any]:
    """Metrics of a prediction set: scikit-learn classification or Dice/IoU segmentation."""
    from streamvol.metrics import classification_report, segmentation_report

    if task.kind == "segmentation":
        report = segmentation_report(
            out["scores"],
            out["targets"],
            num_classes=task.num_classes,
            class_names=task.class_names,
            weights=out["weights"],
        )
        report["dice_per_class"] = report.pop("dice")
        report["iou_per_class"] = report.pop("iou")
        report["dice"], report["iou"] = report["mean_dice"], report["mean_iou"]
        return report
    return classification_report(
        out["targets"],
        out["scores"],
        class_names=task.class_names,
        threshold=threshold if task.binary else None,
        weights=out["weights"],
    )


def write_report(
    trainer: Any,
    *,
    split: str | None,
    prefix: str,
    tta: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Predict ``split`` (None: validation), choose or reuse the threshold, score, plot;
    ``progress(done, total)`` after each batch predicted."""
    from streamvol.metrics import (
        plot_confusion_matrix,
        plot_pr,
        plot_roc,
        sweep_threshold,
    )

    if trainer.task.kind == "detection":
        from streamvol.train import detection

        return detection.write_report(trainer, split=split, prefix=prefix, tta=tta)
    run = trainer.run_dir
    task = trainer.task
    writes = getattr(trainer, "main", True)  # under torchrun, rank 0 alone writes files
    if split is None and not trainer.config.val_split and trainer.config.val_folds is None:
        report: dict[str, Any] = {"task": task.kind, "note": "no validation split"}
        if trainer.history and writes:
            _curves(trainer.history, run)
        return report
    out = trainer.predict(split, tta=tta, progress=progress)
    threshold = _saved_threshold(run)
    if task.binary and split is None and trainer.config.sweep_threshold:
        threshold, _ = sweep_threshold(out["targets"], out["scores"], weights=out["weights"])
        if writes:
            write_json_atomic(
                run / "threshold.json", {"threshold": float(threshold), "from": "val"}
            )
    report = score(out, task, threshold=threshold)
    report["split"] = split or "val"
    report["tta"] = tta
    if not writes:
        return report
    plots = {}
    if trainer.history and split is None:  # after training; evaluation keeps the run's curves
        plots["curves"] = str(_curves(trainer.history, run))
    if task.kind == "classification":
        keep = out["weights"] > 0
        names = list(task.class_names)
        what = f"{run.name}, {report['split']} split{' with 8-flip TTA' if tta else ''}"
        what += f" ({int(keep.sum())} samples)"
        if len(np.unique(out["targets"][keep])) > 1:
            curves = (("roc", plot_roc, "ROC"), ("pr", plot_pr, "precision-recall"))
            for name, plot, label in curves:
                path = run / f"{prefix}_{name}.png"
                plot(
                    out["targets"],
                    out["scores"],
                    path,
                    class_names=names,
                    weights=out["weights"],
                    title=f"{label}: {what}",
                )
                plots[name] = str(path)
        plots["confusion"] = str(
            plot_confusion_matrix(
                report["confusion_matrix"],
                run / f"{prefix}_confusion.png",
                class_names=names,
                title=f"confusion matrix: {what}"
                + (f", threshold {threshold:.2f}" if task.binary else ""),
            )
        )
    report["plots"] = plots
    write_json_atomic(run / f"{prefix}_report.json", report)
    return report


def _curves(history: list[dict[str, Any]], run: Path) -> Path:
    """Loss curves and the validation metrics per epoch (not throughput or learning rate)."""
    from streamvol.metrics import plot_history

    metrics = sorted({k for h in history for k in h if k.startswith("val_") and "loss" not in k})
    title = f"{run.name}: training and validation by epoch"
    return plot_history(history, run / "curves.png", metrics=metrics or None, title=title)


def _saved_threshold(run: Path) -> float:
    import json

    path = run / "threshold.json"
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else 0.5


def evaluate(
    run: str | Path,
    *,
    split: str = "test",
    tta: bool = False,
    device: str | None = None,
    timeout: float | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score a run's best checkpoint on ``split`` with the threshold chosen on validation
    (``timeout``: the loader's, default the run's; ``storage_options`` for URL shards;
    ``progress(done, total)`` after each batch)."""
    from dataclasses import replace

    from streamvol.train.config import TrainConfig
    from streamvol.train.loop import Trainer

    run = Path(run)
    config = TrainConfig.load(run / "config.json")
    if device:
        config = replace(config, device=device)
    if timeout is not None:
        config = replace(config, loader_timeout=timeout)
    config = replace(config, storage_options=storage_options)
    trainer = Trainer.for_evaluation(config, run)
    prefix = f"{split}{'_tta' if tta else ''}"
    return write_report(trainer, split=split, prefix=prefix, tta=tta, progress=progress)


def predict_run(
    run: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    shards: str | None = None,
    tta: bool = False,
    timeout: float | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a CSV of every sample's key, weight, class scores and predicted class (or, for
    segmentation, the predicted foreground fraction) for ``split`` of the run's or other shards
    (``progress(done, total)`` after each batch)."""
    import csv
    from dataclasses import replace

    from streamvol.train.config import TrainConfig
    from streamvol.train.loop import Trainer

    run = Path(run)
    config = TrainConfig.load(run / "config.json")
    if shards:
        config = replace(config, shards=str(shards))
    if timeout is not None:
        config = replace(config, loader_timeout=timeout)
    config = replace(config, storage_options=storage_options)
    trainer = Trainer.for_evaluation(config, run)
    if trainer.task.kind == "detection":
        raise ValueError(
            f"{run}: a detection run predicts whole tomograms, not crops; use "
            "streamvol.train.predict_volumes (streamvol predict RUN [SOURCE...])"
        )
    result = trainer.predict(split, tta=tta, progress=progress)
    names = trainer.task.class_names
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "w", newline="") as f:
        writer = csv.writer(f)
        if trainer.task.kind == "segmentation":
            writer.writerow(["key", "weight", "foreground_fraction"])
            for key, w, labels in zip(
                result["keys"], result["weights"], result["scores"], strict=True
            ):
                writer.writerow([key, w, float((labels > 0).mean())])
        else:
            threshold = _saved_threshold(run)
            scores = result["scores"]
            columns = [f"p_{names[1]}"] if trainer.task.binary else [f"p_{n}" for n in names]
            writer.writerow(["key", "weight", *columns, "predicted"])
            for key, w, s in zip(result["keys"], result["weights"], scores, strict=True):
                if trainer.task.binary:
                    writer.writerow([key, w, float(s), names[int(s >= threshold)]])
                else:
                    writer.writerow([key, w, *map(float, s), names[int(np.argmax(s))]])
    return out
