"""Evaluation: predictions over a split (optionally with test-time augmentation), scikit-learn
metrics, the validation threshold sweep, and the report with its plots."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.core.files import atomic_file, write_json_atomic
from streamvol.errors import BadInput
from streamvol.train.common import identity, plot_curves


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
    tta: str | bool | None = None,
    loss_fn: Any = None,
) -> dict[str, Any]:
    """Run ``model`` over batches; return scores, targets, weights, keys and the mean loss.

    Classification scores are probabilities ((N,) positive class when binary, else (N, C));
    segmentation keeps the predicted labels (N, D, H, W) as ``scores`` (labels and targets in
    the smallest integer dtype that holds them), the probabilities as ``probs`` (float16:
    (N, D, H, W) of the foreground for two classes, else (N, C, D, H, W)) and, for the plot,
    each image's z slice with the most foreground (true or predicted; the middle one when
    there is none) as ``slices`` (N, H, W), its index as ``slice_z`` (N,). ``tta``
    (``flips``, ``rot90z``, ``all``; True: ``flips``) averages the probabilities of the
    transformed crops, each segmentation map turned back first (``streamvol.train.tta``).
    Targets are -1 where the shards hold none (unlabelled crops; no loss then).
    """
    from streamvol.train import tta as tta_mod

    kind = tta_mod.parse(tta)
    model.eval()
    binary = task.binary
    segmentation = task.kind == "segmentation"
    scores, targets, weights, keys, probs_all, slices, slice_z = [], [], [], [], [], [], []
    loss_sum, weight_sum = 0.0, 0.0
    for batch in batches:
        x = batch["image"]
        target = batch.get("mask") if segmentation else batch.get("label")
        probs = None
        views = tta_mod.transforms(kind, x.shape[2:])
        for i, (forward_t, inverse_t) in enumerate(views):
            logits = forward(model, forward_t(x)).float()
            if loss_fn is not None and i == 0 and target is not None:
                loss = loss_fn(logits, target, batch["weight"])
                loss_sum += float(loss) * float(batch["weight"].sum())
                weight_sum += float(batch["weight"].sum())
            if segmentation:
                p = torch.softmax(logits, dim=1) if logits.shape[1] > 1 else torch.sigmoid(logits)
                p = inverse_t(p)
            else:
                p = _probabilities(logits, binary)
            probs = p if probs is None else probs + p
        probs = probs / len(views)
        n = len(x)
        if segmentation:
            labels = probs.argmax(1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5).long()
            scores.append(_compact([labels.cpu().numpy()]))
            kept = probs[:, -1] if probs.shape[1] <= 2 else probs
            probs_all.append(kept.to(torch.float16).cpu().numpy())
            z = _most_foreground(labels, target, task.num_classes)
            slices.append(
                x[torch.arange(n, device=x.device), 0, z.to(x.device)].float().cpu().numpy()
            )
            slice_z.append(z.cpu().numpy())
        else:
            scores.append(probs.cpu().numpy())
        if target is None:
            shape = (n, *x.shape[2:]) if segmentation else (n,)
            targets.append(np.full(shape, -1, dtype=np.int8 if segmentation else np.int64))
        else:
            t = target.cpu().numpy()
            targets.append(_compact([t]) if segmentation else t)
        weights.append(batch["weight"].cpu().numpy())
        keys += batch["__key__"]
    if not keys:
        raise BadInput("the evaluation split yielded no samples")
    join = _compact if segmentation else np.concatenate
    out = {
        "scores": join(scores),
        "targets": join(targets),
        "weights": np.concatenate(weights),
        "keys": keys,
        "loss": loss_sum / max(weight_sum, 1.0),
    }
    if probs_all:
        out["probs"] = np.concatenate(probs_all)
        out["slices"] = np.concatenate(slices)
        out["slice_z"] = np.concatenate(slice_z)
    return out


def _most_foreground(
    labels: torch.Tensor, target: torch.Tensor | None, num_classes: int
) -> torch.Tensor:
    """(N,) the z index of each crop's slice with the most foreground voxels, true or predicted
    (the middle slice of a crop with none)."""
    fg = labels > 0
    if target is not None:
        fg = fg | ((target > 0) & (target < num_classes)).to(fg.device)
    per_z = fg.flatten(2).sum(-1)  # (N, D)
    middle = torch.full_like(per_z[:, 0], labels.shape[1] // 2)
    return torch.where(per_z.amax(1) > 0, per_z.argmax(1), middle)


def _compact(parts: list[np.ndarray]) -> np.ndarray:
    """Voxel labels joined in the smallest integer dtype holding them (uint8 for a few classes,
    int8 with -1): an evaluation holds every crop's labels and targets at once."""
    filled = [p for p in parts if p.size]
    lo = min((int(p.min()) for p in filled), default=0)
    hi = max((int(p.max()) for p in filled), default=0)
    dtype = next(
        d
        for d in (np.uint8, np.int8, np.int16, np.int32, np.int64)
        if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max
    )
    return np.concatenate(parts, dtype=dtype, casting="unsafe")


def score(out: dict[str, Any], task: Any, *, threshold: float | None = 0.5) -> dict[str, Any]:
    """Metrics of a prediction set: scikit-learn classification, or segmentation's Dice and IoU
    per class over all the split's voxels and per-voxel sensitivity, specificity and ROC AUC.

    Segmentation sums the voxel counts of the crops before dividing (nnU-Net's pseudo-Dice):
    averaged per crop, a class absent from a crop and from its prediction scores 1 there, so
    on sparse classes (particles in a tomogram) a model that finds nothing scores high and
    would be kept as best. Each crop's own Dice still ranks the crops in the plot."""
    from streamvol.metrics import classification_report, segmentation_report

    if (out["targets"] < 0).any():
        raise BadInput(
            "the split holds unlabelled crops (no class or mask in its shards): nothing to score"
        )
    if task.kind == "segmentation":
        report = segmentation_report(
            out["scores"],
            out["targets"],
            num_classes=task.num_classes,
            class_names=task.class_names,
            weights=out["weights"],
            scores=out.get("probs"),
            reduction="global",
        )
        report["dice_per_class"] = report.pop("dice")
        report["iou_per_class"] = report.pop("iou")
        report["dice"], report["iou"] = report["mean_dice"], report["mean_iou"]
        report["task"] = "segmentation"
        if report.get("ignore_index") is None:
            report.pop("ignore_index", None)  # a setting, not a metric: no row of dashes
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
    tta: str | bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Predict ``split`` (None: validation), choose or reuse the threshold, score, plot, and keep
    the predictions (``<prefix>_predictions.npz``: keys, targets, scores, weights; what
    ``compare`` draws); ``progress(done, total)`` after each batch predicted (detection: after
    each window of the whole tomograms)."""
    from streamvol.metrics import (
        plot_confusion_matrix,
        plot_pr,
        plot_roc,
        sweep_threshold,
    )
    from streamvol.train import tta as tta_mod

    kind = tta_mod.parse(tta)
    if trainer.task.kind == "detection":
        from streamvol.train import detection

        return detection.write_report(
            trainer, split=split, prefix=prefix, tta=tta, progress=progress
        )
    if trainer.task.kind == "reconstruction":
        from streamvol.train import pretrain

        return pretrain.write_report(trainer, split=split, prefix=prefix, progress=progress)
    run = trainer.run_dir
    task = trainer.task
    writes = getattr(trainer, "main", True)  # under torchrun, rank 0 alone writes files
    if split is None and not trainer.config.val_split and trainer.config.val_folds is None:
        report: dict[str, Any] = {"task": task.kind, "note": "no validation split"}
        if trainer.history and writes:
            plot_curves(trainer.history, run)
        return report
    out = trainer.predict(split, tta=kind, progress=progress)
    threshold = saved_threshold(run)
    if task.binary and split is None and trainer.config.sweep_threshold:
        threshold, _ = sweep_threshold(out["targets"], out["scores"], weights=out["weights"])
        if writes:
            write_json_atomic(
                run / "threshold.json", {"threshold": float(threshold), "from": "val"}
            )
    report = score(out, task, threshold=threshold)
    report["split"] = split or "val"
    report["tta"] = kind
    report.update(identity(trainer))
    if not writes:
        return report
    _save_predictions(run / f"{prefix}_predictions.npz", out, task)
    plots = {}
    if trainer.history and split is None:  # after training; evaluation keeps the run's curves
        plots["curves"] = str(plot_curves(trainer.history, run))
    keep = out["weights"] > 0
    names = list(task.class_names)
    what = f"{run.name}, {report['split']} split{f' with {_TTA_WORDS[kind]}' if kind else ''}"
    what += f" ({int(keep.sum())} samples)"
    if task.kind == "segmentation":
        path = run / f"{prefix}_segmentations.png"
        plots["segmentations"] = str(_plot_segmentations(out, report, path, what))
    if task.kind == "classification":
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


def _plot_segmentations(out: dict[str, Any], report: dict[str, Any], path: Path, what: str) -> Path:
    """Up to 6 crops, from the worst foreground Dice to the best, each the z slice with the
    most foreground."""
    from streamvol.metrics import plot_segmentations

    kept = np.flatnonzero(out["weights"] > 0)
    per = np.asarray(report["per_sample_dice"], dtype=np.float64)  # (kept, C); class 0: background
    dice = per[:, 1:].mean(axis=1) if per.shape[1] > 1 else per[:, 0]
    rows = spread_by_rank(dice, 6)
    at = kept[rows]
    z = out["slice_z"][at]
    return plot_segmentations(
        out["slices"][at],
        out["targets"][at, z],
        out["scores"][at, z],
        path,
        dice=dice[rows].tolist(),
        z=z.tolist(),
        class_names=report["class_names"],
        title=f"{what}\nworst to best Dice, each the z slice with the most foreground",
    )


def spread_by_rank(values: Any, n: int) -> np.ndarray:
    """Indices of ``n`` of ``values`` (all when fewer) evenly spread over their ranks, from the
    lowest value to the highest: the worst, typical and best cases to look at."""
    order = np.argsort(np.asarray(values), kind="stable")
    if len(order) <= n:
        return order
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]


_TTA_WORDS = {
    "flips": "8-flip TTA",
    "rot90z": "TTA of 4 turns about z",
    "all": "16-view TTA (flips and turns about z)",
}


def _save_predictions(path: Path, out: dict[str, Any], task: Any) -> None:
    """Classification predictions as npz (small: one row per crop); segmentation keeps none."""
    if task.kind != "classification":
        return
    with atomic_file(path, "wb") as f:
        np.savez(
            f,
            keys=np.asarray(out["keys"]),
            targets=out["targets"],
            scores=out["scores"],
            weights=out["weights"],
            class_names=np.asarray(task.class_names),
        )


def load_predictions(path: str | Path) -> dict[str, Any]:
    """What ``_save_predictions`` wrote, as plain arrays (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def tta_prefix(split: str, tta: str | bool | None) -> str:
    """The file prefix of an evaluation: ``test``, ``test_tta`` (flips), ``test_tta_rot90z``."""
    from streamvol.train import tta as tta_mod

    kind = tta_mod.parse(tta)
    if kind is None:
        return split
    return f"{split}_tta" if kind == "flips" else f"{split}_tta_{kind}"


def saved_threshold(run: Path) -> float:
    """The decision threshold chosen on validation (0.5 when the run chose none)."""
    import json

    path = run / "threshold.json"
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else 0.5
