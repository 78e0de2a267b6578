"""``streamvol score PRED REF`` for segmentation: Dice and IoU per class of the label volumes
``streamvol predict`` wrote (PRED: its output folder, ``<experiment>/labels.ome.zarr``) against
the masks under REF (any layout streamvol reads: sample folders with ``mask/``, ``<stem>_mask``
volumes), matched by experiment id. Each volume is counted block by block (no volume is held
whole) and scored on its own; ``overall`` scores the voxels of all of them together. Only
volumes both sides hold are scored (a test split's predictions against the whole data set's
masks): the others are listed, PRED's as ``unscored``, REF's as ``unpredicted``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.core.files import write_json_atomic
from streamvol.errors import BadLabels, ShapeMismatch
from streamvol.io import discover, natural_key, open_volume
from streamvol.metrics import confusion_counts, dice_iou

PREDICT_JSON = "predict.json"
_BLOCK_VOXELS = 1 << 24  # voxels read at a time from each volume


def is_label_prediction(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``streamvol predict`` wrote for a segmentation run."""
    summary = Path(path) / PREDICT_JSON
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("task") == "segmentation"
    except json.JSONDecodeError:
        return False


def score_labels(
    pred: str | Path,
    ref: str | Path,
    *,
    out: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score PRED's label volumes against REF's masks (see the module docstring); write the
    report as JSON to ``out`` and its bars, Dice per class and volume, beside it (``.png``).
    ``progress(experiment, slices done, slices)`` after each block read."""
    pred = Path(pred)
    summary = json.loads((pred / PREDICT_JSON).read_text())
    names = summary.get("class_names")
    if not names:
        raise BadLabels(
            f"{pred / PREDICT_JSON}: no class_names (an older streamvol wrote it); run "
            "streamvol predict again"
        )
    masks = _reference_masks(ref, summary.get("copick_masks") or {})
    experiments = list(summary["experiments"])
    scored = [e for e in experiments if e in masks]
    if not scored:
        raise BadLabels(
            f"{ref}: no mask for any experiment of {pred} ({', '.join(experiments)}); masks "
            f"found for: {', '.join(sorted(masks)) or 'none'}"
        )
    total = np.zeros((len(names), len(names)))
    per: dict[str, Any] = {}
    for experiment in scored:
        counts = volume_counts(
            pred / experiment / "labels.ome.zarr",
            masks[experiment],
            names,
            binary=bool(summary.get("binary_mask")),
            progress=None if progress is None else functools.partial(progress, experiment),
        )
        total += counts
        per[experiment] = {"mask": str(masks[experiment]), **_scores(counts, names)}
    report = {
        "task": "segmentation",
        "pred": str(pred),
        "ref": str(ref),
        "class_names": names,
        "experiments": per,
        "overall": _scores(total, names),
        "unscored": [e for e in experiments if e not in masks],
        "unpredicted": sorted(set(masks) - set(experiments), key=natural_key),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["plot"] = str(_plot(report, out.with_suffix(".png")))
        write_json_atomic(out, report)
    return report


def _reference_masks(ref: str | Path, copick: Mapping[str, Any]) -> dict[str, Path]:
    """Experiment -> mask under REF; a copick project's are the segmentation the run's shards
    read (``copick_masks`` of predict.json), found as the shards found them."""
    from streamvol.io import copick_project
    from streamvol.predict._run import experiment_name

    options = copick if copick and copick_project(ref) else {}
    dataset = discover(ref, **options)
    return {experiment_name(s.id, s.image): s.mask for s in dataset.sources if s.mask is not None}


def _plot(report: Mapping[str, Any], path: Path) -> Path:
    from streamvol.metrics import plot_scores

    names = report["class_names"]
    shown = names[1:] if len(names) > 1 else names  # class 0 is the background
    rows = {**report["experiments"], "all": report["overall"]}
    return plot_scores(
        {e: {n: row["dice"][n] for n in shown} for e, row in rows.items()},
        path,
        ylabel="Dice",
        title=f"{report['pred']} against {report['ref']}: mean foreground Dice "
        f"{report['overall']['mean_dice']:.3f}",
        notes={e: f"{row['voxels']:,} voxels" for e, row in rows.items()},
    )


def volume_counts(
    labels: str | Path,
    mask: str | Path,
    names: Sequence[str],
    *,
    binary: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(C, C) voxel counts of a predicted label volume (OME-Zarr) against a mask volume (any
    format), rows the mask's class; a mask value outside the classes is refused, naming it.
    ``binary``: every mask label > 0 is class 1, as a ``--mask-labels binary`` run learned.
    ``progress(slices done, slices)`` after each block."""
    import zarr

    predicted = zarr.open_group(str(labels), mode="r")["0"]
    truth = open_volume(mask)
    if tuple(predicted.shape) != tuple(truth.shape):
        raise ShapeMismatch(
            f"{labels}: shape {tuple(predicted.shape)}, but its mask {mask} has "
            f"{tuple(truth.shape)}; expected equal shapes"
        )
    c = len(names)
    depth = max(1, _BLOCK_VOXELS // max(1, int(np.prod(truth.shape[1:]))))
    counts = np.zeros((c, c))
    for z in range(0, truth.shape[0], depth):
        p = np.asarray(predicted[z : z + depth])
        t = np.asarray(truth.data[z : z + depth])
        if binary:
            t = np.where(t > 0, 1, t)  # negative labels stay, to be refused
        bad = (t < 0) | (t >= c)
        if bad.any():
            raise BadLabels(
                f"{mask}: value {t[bad][0]} in slice z={z + int(np.argwhere(bad)[0][0])}; "
                f"expected class ids 0 to {c - 1} ({', '.join(names)}), as the run learned"
            )
        counts += confusion_counts(p, t, c)
        if progress is not None:
            progress(min(z + depth, truth.shape[0]), truth.shape[0])
    return counts


def _scores(counts: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    dice, iou = dice_iou(counts)
    fg = slice(1, None) if len(names) > 1 else slice(None)  # class 0 is the background
    return {
        "dice": dict(zip(names, dice.tolist(), strict=True)),
        "iou": dict(zip(names, iou.tolist(), strict=True)),
        "mean_dice": float(dice[fg].mean()),
        "mean_iou": float(iou[fg].mean()),
        "voxels": int(counts.sum()),
    }


def format_label_score(report: Mapping[str, Any]) -> str:
    """A plain-text table: Dice per class for each experiment and over all of them."""
    names = report["class_names"]
    width = max(10, *(len(e) for e in report["experiments"]))
    sides = [max(12, len(n)) for n in names]
    head = f"{'experiment':<{width}} {'voxels':>11} " + " ".join(
        f"{n:>{w}}" for n, w in zip(names, sides, strict=True)
    )
    lines = ["Dice per class", head]
    rows = [*report["experiments"].items(), ("all", report["overall"])]
    for name, row in rows:
        cells = " ".join(f"{row['dice'][n]:>{w}.3f}" for n, w in zip(names, sides, strict=True))
        lines.append(f"{name:<{width}} {row['voxels']:>11,} {cells}")
    overall = report["overall"]
    lines.append(
        f"mean over the foreground classes, all voxels: Dice {overall['mean_dice']:.4f}, "
        f"IoU {overall['mean_iou']:.4f}"
    )
    return "\n".join(lines)
