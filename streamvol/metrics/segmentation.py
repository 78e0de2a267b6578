"""Dice and IoU per class for integer label volumes, and per-voxel sensitivity, specificity and
ROC AUC (scikit-learn) over the whole set.

Conventions, chosen so that a score is always defined:

- A class absent from both the prediction and the target of a sample scores 1.0 for that
  sample (nothing to find, nothing wrongly found), as MONAI's ``DiceMetric`` with
  ``ignore_empty=False``. With ``reduction="global"`` the same rule applies to the whole set.
- Voxels whose target equals ``ignore_index`` count for no class, in prediction or target.
- Samples of weight 0 are padding and dropped; other weights weigh the per-sample mean, and
  each voxel of a sample (sensitivity, specificity, ROC AUC) by its sample's weight.
- Per-voxel sensitivity and specificity are one-vs-rest per class from the voxel counts of
  the whole set; ROC AUC needs the predicted probabilities (``scores``) and is computed on at
  most ``MAX_AUC_VOXELS`` voxels, an even stride through the set when it holds more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from streamvol.errors import BadInput, BadOption, ShapeMismatch
from streamvol.metrics._arrays import as_numpy, check_labels, sample_mask

MAX_AUC_VOXELS = 2_000_000


def segmentation_report(
    pred: Any,
    target: Any,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    weights: Any = None,
    background: int | None = 0,
    reduction: Literal["sample", "global"] = "sample",
    scores: Any = None,
) -> dict[str, Any]:
    """Dice and IoU of each class, and their means over the foreground classes.

    ``pred`` and ``target`` are integer labels of shape (N, D, H, W), (N, 1, D, H, W) or one
    volume (D, H, W); ``pred`` may also be float class scores (N, C, D, H, W), turned into
    labels by argmax over C. ``reduction="sample"`` scores each sample and takes the (weighted)
    mean over samples; ``"global"`` sums voxel counts over all samples first, which does not
    let small samples weigh as much as large ones. Foreground is every class but
    ``background`` (``None``: every class).

    ``scores``: the predicted probabilities, (N, C, D, H, W), or (N, D, H, W) of class 1 when
    there are two classes; with them, ``roc_auc`` is the per-voxel ROC AUC (the foreground
    class's, or the mean one-vs-rest AUC of the foreground classes).

    Returned keys: dice and iou ({class name: value}), mean_dice, mean_iou (foreground),
    sensitivity, specificity and roc_auc (per voxel, mean over the foreground classes; None
    where undefined), per_class_voxel ({class name: sensitivity, specificity, roc_auc}),
    per_sample_dice and per_sample_iou ((N, C) lists, kept samples only), class_names,
    n_samples, n_padding, reduction, ignore_index.
    """
    if num_classes < 1:
        raise BadOption("num_classes", num_classes, "expected >= 1")
    if reduction not in ("sample", "global"):
        raise BadOption("reduction", reduction, "expected 'sample' or 'global'")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise BadOption(
            "ignore_index",
            ignore_index,
            f"expected a value outside the class ids [0, {num_classes})",
        )
    if background is not None and not 0 <= background < num_classes:
        raise BadOption("background", background, f"expected a class id in [0, {num_classes})")
    names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise BadOption("class_names", names, f"expected {num_classes} names, got {len(names)}")

    p = as_numpy(pred, "pred")
    if p.ndim == 5 and p.shape[1] == num_classes > 1 and np.issubdtype(p.dtype, np.floating):
        p = p.argmax(axis=1)  # (N, C, D, H, W) class scores -> labels
    p = _batched(p, "pred")
    t = _batched(as_numpy(target, "target"), "target")
    if p.shape != t.shape:
        raise ShapeMismatch(f"pred: expected the target's shape {t.shape}, got {p.shape}")
    keep, w = sample_mask(weights, p.shape[0])
    if not keep.all():
        p, t = p[keep], t[keep]

    counts = np.stack(
        [confusion_counts(pi, ti, num_classes, ignore_index) for pi, ti in zip(p, t, strict=True)]
    )
    per_dice, per_iou = dice_iou(counts)  # (N, C) each
    if reduction == "sample":
        dice = np.average(per_dice, axis=0, weights=w)
        iou = np.average(per_iou, axis=0, weights=w)
    else:
        sample_w = np.ones(len(counts)) if w is None else w
        total = np.tensordot(sample_w, counts, axes=1)[None]
        dice, iou = (a[0] for a in dice_iou(total))
    fg = [k for k in range(num_classes) if k != background]
    sample_w = np.ones(len(counts)) if w is None else w
    sens, spec = _voxel_rates(np.tensordot(sample_w, counts, axes=1))
    aucs: list[float | None] = [None] * num_classes
    if scores is not None:
        aucs = _voxel_aucs(scores, t, keep, w, num_classes, ignore_index)
    return {
        "dice": {n: float(v) for n, v in zip(names, dice, strict=True)},
        "iou": {n: float(v) for n, v in zip(names, iou, strict=True)},
        "mean_dice": float(np.mean(dice[fg])) if fg else None,
        "mean_iou": float(np.mean(iou[fg])) if fg else None,
        "sensitivity": _mean_defined([sens[k] for k in fg]),
        "specificity": _mean_defined([spec[k] for k in fg]),
        "roc_auc": _mean_defined([aucs[k] for k in fg]),
        "per_class_voxel": {
            n: {"sensitivity": sens[k], "specificity": spec[k], "roc_auc": aucs[k]}
            for k, n in enumerate(names)
        },
        "per_sample_dice": per_dice.tolist(),
        "per_sample_iou": per_iou.tolist(),
        "class_names": names,
        "n_samples": int(keep.sum()),
        "n_padding": int((~keep).sum()),
        "reduction": reduction,
        "ignore_index": ignore_index,
    }


def _voxel_rates(total: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """One-vs-rest sensitivity TP / (TP + FN) and specificity TN / (TN + FP) of each class from
    (C, C) weighted voxel counts (rows target, columns prediction); None where undefined."""
    all_voxels = total.sum()
    sens: list[float | None] = []
    spec: list[float | None] = []
    for k in range(total.shape[0]):
        tp = total[k, k]
        positives = total[k, :].sum()
        fp = total[:, k].sum() - tp
        negatives = all_voxels - positives
        sens.append(float(tp / positives) if positives > 0 else None)
        spec.append(float((negatives - fp) / negatives) if negatives > 0 else None)
    return sens, spec


def _voxel_aucs(
    scores: Any,
    target: np.ndarray,
    keep: np.ndarray,
    w: np.ndarray | None,
    num_classes: int,
    ignore_index: int | None,
) -> list[float | None]:
    """Per-voxel one-vs-rest ROC AUC of each class (scikit-learn), each voxel weighted by its
    sample's weight; at most ``MAX_AUC_VOXELS`` voxels, an even stride through them. Only the
    chosen voxels are gathered: the set's probabilities are not copied whole."""
    from sklearn.metrics import roc_auc_score

    s = as_numpy(scores, "scores")
    given = s.shape
    if s.ndim == 4 and num_classes != 2:
        raise BadInput(
            f"scores: (N, D, H, W) probabilities suit 2 classes; got {num_classes} classes"
        )
    binary = num_classes == 2 and (s.ndim == 4 or (s.ndim == 5 and s.shape[1] == 1))
    if binary:
        s = s.reshape(s.shape[0], 1, *s.shape[-3:])
    if s.ndim != 5 or s.shape[1] != (1 if binary else num_classes) or s.shape[0] != len(keep):
        raise ShapeMismatch(
            f"scores: expected ({len(keep)}, {num_classes}, D, H, W) probabilities, got {given}"
        )
    if s.shape[2:] != target.shape[1:]:
        raise ShapeMismatch(f"scores: expected voxels {target.shape[1:]}, got {s.shape[2:]}")
    per_voxel = int(np.prod(target.shape[1:]))
    index = _strided_voxels(target, ignore_index, MAX_AUC_VOXELS)
    sample, voxel = np.divmod(index, per_voxel)
    flat_t = target.reshape(-1)[index]
    flat_s = s.reshape(s.shape[0], s.shape[1], per_voxel)[np.flatnonzero(keep)[sample], :, voxel]
    if binary:
        p1 = flat_s[:, 0].astype(np.float32)
        flat_s = np.stack([1.0 - p1, p1], axis=1)
    flat_w = None if w is None else w[sample]
    out: list[float | None] = []
    for k in range(num_classes):
        positive = flat_t == k
        if positive.all() or not positive.any():
            out.append(None)
            continue
        out.append(float(roc_auc_score(positive, flat_s[:, k], sample_weight=flat_w)))
    return out


def _strided_voxels(target: np.ndarray, ignore_index: int | None, limit: int) -> np.ndarray:
    """Flat indices into ``target`` (N, ...) of every step-th voxel not ``ignore_index``, the
    step the smallest that keeps at most ``limit``; one sample's mask at a time."""
    if ignore_index is None:
        return np.arange(0, target.size, max(1, -(-target.size // limit)))
    counts = [int(np.count_nonzero(t != ignore_index)) for t in target]
    step = max(1, -(-sum(counts) // limit))
    out, seen = [np.zeros(0, dtype=np.int64)], 0
    for i, (t, n) in enumerate(zip(target, counts, strict=True)):
        first = (-seen) % step
        if first < n:
            out.append(np.flatnonzero(t.reshape(-1) != ignore_index)[first::step] + i * t.size)
        seen += n
    return np.concatenate(out)


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _batched(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 5 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise BadInput(
            f"{name}: expected (N, D, H, W), (N, 1, D, H, W) or (D, H, W), got {x.shape}"
        )
    return x


def confusion_counts(
    p: np.ndarray, t: np.ndarray, c: int, ignore_index: int | None = None
) -> np.ndarray:
    """(C, C) voxel counts of labels ``p`` against ``t``, rows target class, columns predicted
    class; summed over blocks of a volume, they score it whole (``dice_iou``)."""
    p, t = p.reshape(-1), t.reshape(-1)
    if ignore_index is not None:
        valid = t != ignore_index
        p, t = p[valid], t[valid]
    p = check_labels(p, c, "pred")
    t = check_labels(t, c, "target")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.float64)


def dice_iou(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of (..., C, C) confusion counts; 1.0 where a class is in neither."""
    inter = np.diagonal(counts, axis1=-2, axis2=-1)
    size_sum = counts.sum(axis=-2) + counts.sum(axis=-1)  # |pred| + |target|
    union = size_sum - inter
    empty = size_sum == 0
    dice = np.divide(2 * inter, size_sum, out=np.ones_like(inter), where=~empty)
    iou = np.divide(inter, union, out=np.ones_like(inter), where=~empty)
    return dice, iou
