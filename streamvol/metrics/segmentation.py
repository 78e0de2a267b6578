"""Dice and IoU per class for integer label volumes.

Conventions, chosen so that a score is always defined:

- A class absent from both the prediction and the target of a sample scores 1.0 for that
  sample (nothing to find, nothing wrongly found), as MONAI's ``DiceMetric`` with
  ``ignore_empty=False``. With ``reduction="global"`` the same rule applies to the whole set.
- Voxels whose target equals ``ignore_index`` count for no class, in prediction or target.
- Samples of weight 0 are padding and dropped; other weights weigh the per-sample mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from streamvol.errors import ShapeMismatch
from streamvol.metrics._arrays import as_numpy, check_labels, sample_mask


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
) -> dict[str, Any]:
    """Dice and IoU of each class, and their means over the foreground classes.

    ``pred`` and ``target`` are integer labels of shape (N, D, H, W), (N, 1, D, H, W) or one
    volume (D, H, W); ``pred`` may also be float class scores (N, C, D, H, W), turned into
    labels by argmax over C. ``reduction="sample"`` scores each sample and takes the (weighted)
    mean over samples; ``"global"`` sums voxel counts over all samples first, which does not
    let small samples weigh as much as large ones. Foreground is every class but
    ``background`` (``None``: every class).

    Returned keys: dice and iou ({class name: value}), mean_dice, mean_iou (foreground),
    per_sample_dice and per_sample_iou ((N, C) lists, kept samples only), class_names,
    n_samples, n_padding, reduction, ignore_index.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    if reduction not in ("sample", "global"):
        raise ValueError(f"reduction: expected 'sample' or 'global', got {reduction!r}")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index: expected a value outside the class ids [0, {num_classes}), "
            f"got {ignore_index}"
        )
    if background is not None and not 0 <= background < num_classes:
        raise ValueError(f"background: expected a class id in [0, {num_classes}), got {background}")
    names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names, got {len(names)}")

    p = as_numpy(pred, "pred")
    if p.ndim == 5 and p.shape[1] == num_classes > 1 and np.issubdtype(p.dtype, np.floating):
        p = p.argmax(axis=1)  # (N, C, D, H, W) class scores -> labels
    p = _batched(p, "pred")
    t = _batched(as_numpy(target, "target"), "target")
    if p.shape != t.shape:
        raise ShapeMismatch(f"pred: expected the target's shape {t.shape}, got {p.shape}")
    keep, w = sample_mask(weights, p.shape[0])
    p, t = p[keep], t[keep]

    counts = np.stack(
        [_confusion(pi, ti, num_classes, ignore_index) for pi, ti in zip(p, t, strict=True)]
    )
    per_dice, per_iou = _scores(counts)  # (N, C) each
    if reduction == "sample":
        dice = np.average(per_dice, axis=0, weights=w)
        iou = np.average(per_iou, axis=0, weights=w)
    else:
        sample_w = np.ones(len(counts)) if w is None else w
        total = np.tensordot(sample_w, counts, axes=1)[None]
        dice, iou = (a[0] for a in _scores(total))
    fg = [k for k in range(num_classes) if k != background]
    return {
        "dice": {n: float(v) for n, v in zip(names, dice, strict=True)},
        "iou": {n: float(v) for n, v in zip(names, iou, strict=True)},
        "mean_dice": float(np.mean(dice[fg])) if fg else None,
        "mean_iou": float(np.mean(iou[fg])) if fg else None,
        "per_sample_dice": per_dice.tolist(),
        "per_sample_iou": per_iou.tolist(),
        "class_names": names,
        "n_samples": int(keep.sum()),
        "n_padding": int((~keep).sum()),
        "reduction": reduction,
        "ignore_index": ignore_index,
    }


def _batched(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 5 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(
            f"{name}: expected (N, D, H, W), (N, 1, D, H, W) or (D, H, W), got {x.shape}"
        )
    return x


def _confusion(p: np.ndarray, t: np.ndarray, c: int, ignore_index: int | None) -> np.ndarray:
    """(C, C) voxel counts, rows target class, columns predicted class."""
    p, t = p.reshape(-1), t.reshape(-1)
    if ignore_index is not None:
        valid = t != ignore_index
        p, t = p[valid], t[valid]
    p = check_labels(p, c, "pred")
    t = check_labels(t, c, "target")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.float64)


def _scores(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of (..., C, C) confusion counts; 1.0 where a class is in neither."""
    inter = np.diagonal(counts, axis1=-2, axis2=-1)
    size_sum = counts.sum(axis=-2) + counts.sum(axis=-1)  # |pred| + |target|
    union = size_sum - inter
    empty = size_sum == 0
    dice = np.divide(2 * inter, size_sum, out=np.ones_like(inter), where=~empty)
    iou = np.divide(inter, union, out=np.ones_like(inter), where=~empty)
    return dice, iou
