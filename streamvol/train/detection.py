"""Detection runs: the task a shard set of picks poses, the per-epoch validation metric, and
the whole-tomogram report with per-type thresholds chosen on validation.

The trainer only sees batches with ``image`` and ``points`` / ``points_count`` in the crop's
voxels after augmentation (targets are drawn from them, ``streamvol.train.targets``), so the
same code trains on points shards (a crop per pick) and region shards (crops drawn at read time).

Validation metric (``val_czii``, every epoch, cheap): on the validation crops, peaks of each
type's probabilities (NMS within half the radius) against the crop's picks, counted with the
CZII rule (found within half the radius); per type the best F-beta(4) over a grid of
thresholds, then the CZII weighted mean. Crop borders make it an estimate; it ranks epochs.

Report (after training, and ``evaluate``): every tomogram of the split predicted whole (sliding
windows), peaks per type at a grid of thresholds scored against the tomogram's reference picks
in Angstrom; on validation the best threshold per type is stored in ``thresholds.json`` with
the window and peak settings, which ``evaluate`` and ``predict`` then reuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.core.files import write_json_atomic
from streamvol.errors import BadInput
from streamvol.metrics.picking import (
    best_threshold,
    fbeta_from_counts,
    match_points,
)
from streamvol.train.common import counted, identity, plot_curves
from streamvol.train.targets import TargetSpec, make_targets

VAL_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # crop-level metric: 0.05..0.95
GRID = tuple(round(0.02 * k, 2) for k in range(1, 50))  # thresholds on tomograms: 0.02..0.98
MULTIPLIER = 0.5  # a reference is found within this fraction of its radius (CZII)
BETA = 4.0


# --- the task -----------------------------------------------------------------------------------


def batch_targets(spec: TargetSpec, batch: Mapping[str, Any]) -> torch.Tensor:
    """The targets of a batch, drawn from its (augmented) points."""
    if "points" not in batch:
        raise BadInput("a detection batch needs points; these samples carry none")
    return make_targets(batch["points"], batch["points_count"], batch["image"].shape[2:], spec)


def probabilities(spec: TargetSpec, logits: torch.Tensor) -> torch.Tensor:
    """Per-type probabilities (B, P, ...) from the model's logits."""
    logits = logits.float()
    if spec.kind == "sphere":
        return torch.softmax(logits, dim=1)[:, 1:]
    return torch.sigmoid(logits)


def weighted_score(task: Any, fbetas: Mapping[str, float]) -> float:
    """The CZII score: sum of weight x F-beta over the scored types / the sum of all weights
    (``task.weights``: the copick config's, as ``score`` takes them from a reference)."""
    weights = dict(zip(task.class_names, task.weights, strict=True))
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(weights[n] * f for n, f in fbetas.items()) / total


# --- every epoch: crops -------------------------------------------------------------------------


def crop_counts(spec: TargetSpec, probs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(types, len(VAL_GRID), 3) TP, FP, FN of one crop's peaks (``probs`` (P, D, H, W))
    against its picks (``points`` (N, 4)) at each threshold, distances in space (mean voxels:
    ``spec.spacing`` on anisotropic voxels), found within ``MULTIPLIER`` x the radius."""
    from streamvol.predict import find_peaks

    counts = np.zeros((spec.num_types, len(VAL_GRID), 3), np.int64)
    step = np.asarray(spec.spacing)  # crop voxels to mean voxels, per axis
    ids = np.rint(points[:, 3]).astype(np.int64) - spec.point_offset
    for k in range(spec.num_types):
        reach = MULTIPLIER * spec.radii[k]
        coords, scores = find_peaks(probs[k], VAL_GRID[0], reach / step)
        ref = points[ids == k, :3] * step
        for t, threshold in enumerate(VAL_GRID):
            counts[k, t] += match_points(ref, coords[scores >= threshold] * step, reach)
    return counts


@torch.no_grad()
def validate(trainer: Any, progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Validation loss and ``czii`` (module docstring) over the validation crops;
    ``progress(done, total)`` after each batch."""
    from streamvol.train import distributed, setup

    config, task = trainer.config, trainer.task
    spec: TargetSpec = task.target
    ds = setup.make_dataset(config, train=False)
    dl = trainer.eval_loader(ds)
    net = trainer.ema.model if trainer.ema else trainer.model
    net.eval()
    counts = np.zeros((spec.num_types, len(VAL_GRID), 3), np.int64)
    loss_sum = weight_sum = 0.0
    total = len(dl)
    with dl:  # its workers stop here, also when the pass is stopped
        for batch in counted(trainer._batches(dl), total, progress):
            w = batch["weight"]
            logits = trainer._forward(net, batch["image"]).float()
            loss = trainer.loss_fn(logits, batch_targets(spec, batch), w)
            loss_sum += float(loss) * float(w.sum())
            weight_sum += float(w.sum())
            probs = probabilities(spec, logits).cpu().numpy()
            points = batch["points"].cpu().numpy()
            n_points = batch["points_count"].cpu().numpy()
            for i in np.flatnonzero(w.cpu().numpy() > 0):
                counts += crop_counts(spec, probs[i], points[i, : n_points[i]])
    flat = distributed.sum_all(trainer.ranks, loss_sum, weight_sum, *counts.ravel().tolist())
    loss_sum, weight_sum = flat[0], flat[1]
    counts = np.asarray(flat[2:], np.int64).reshape(counts.shape)
    fbetas = {}
    for k, name in enumerate(task.class_names):
        if counts[k, 0, 0] + counts[k, 0, 2] > 0:  # the type has references in these crops
            fbetas[name] = best_threshold(VAL_GRID, counts[k], BETA)["fbeta"]
    return {"val_loss": loss_sum / max(weight_sum, 1.0), "val_czii": weighted_score(task, fbetas)}


# --- after training, and evaluate: whole tomograms ---------------------------------------------


def reference_picks(
    source: Mapping[str, Any], voxel_size: Sequence[float]
) -> dict[str, np.ndarray]:
    """A manifest source's picks in Angstrom by particle type (z, y, x): its copick pick files
    (Angstrom), or its spot table (voxels of ``voxel_size``, the volume's as the run reads it)."""
    from streamvol.io import read_copick_picks, read_spot_table

    found: dict[str, list[np.ndarray]] = {}
    for path in source.get("points", []):
        if str(path).lower().endswith(".json"):
            part = read_copick_picks(path, 1.0).by_name()
        else:
            part = read_spot_table(path).by_name(voxel_size)
        for name, zyx in part.items():
            found.setdefault(name, []).append(zyx)
    return {k: np.concatenate(v) for k, v in found.items()}


def _count(
    predictor: Any,
    sources: Sequence[Mapping[str, Any]],
    grids: Sequence[Sequence[float]],
    window: Any,
    peaks: Any,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[tuple[str, str, Sequence[float]]], list[str]]:
    """TP, FP, FN per type and threshold summed over ``sources`` (tomograms with references;
    the others are dropped, as the CZII metric drops them), the picks at each type's first
    threshold, and the experiments scored; ``progress(done, total)`` counts the windows of all
    the tomograms scored."""
    from streamvol.io import open_volume
    from streamvol.predict import count_windows, find_peaks

    names = predictor.class_names
    counts = [np.zeros((len(g), 3), np.int64) for g in grids]
    rows: list[tuple[str, str, Sequence[float]]] = []
    scored = []
    todo = []
    for source in sources:
        volume = open_volume(source["path"], level=predictor.level)  # lazy: reads nothing yet
        size = predictor.voxel_size(volume)
        refs = reference_picks(source, size)
        if any(len(v) for v in refs.values()):
            todo.append((source, volume, size, refs, count_windows(volume.shape, window)))
    total = sum(t[-1] for t in todo)
    before = 0
    if progress:
        progress(0, total)
    for source, volume, size, refs, windows in todo:
        scored.append(source["id"])
        step = None if progress is None else (lambda d, _n, at=before: progress(at + d, total))
        probs = predictor.probabilities(volume, window, step)
        before += windows
        for k, name in enumerate(names):
            radius_vox = predictor.task.radii_angstrom[k] / np.asarray(size)  # per axis
            reach = MULTIPLIER * predictor.task.radii_angstrom[k]
            ref = refs.get(name, np.zeros((0, 3)))
            grid = grids[k]
            if peaks.method == "nms":
                coords, scores = find_peaks(probs[k], min(grid), peaks.distance * radius_vox)
                found = [coords[scores >= t] for t in grid]
            else:
                found = [
                    find_peaks(
                        probs[k],
                        t,
                        peaks.distance * radius_vox,
                        method="cc",
                        min_size=peaks.min_size,
                    )[0]
                    for t in grid
                ]
            for t, coords_t in enumerate(found):
                counts[k][t] += match_points(ref, coords_t * size, reach)
            rows.extend((source["id"], name, p) for p in found[0] * size)
        del probs
    return counts, rows, scored  # type: ignore[return-value]


def write_report(
    trainer: Any,
    *,
    split: str | None,
    prefix: str,
    tta: str | bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Whole-tomogram report of a detection run on ``split`` (None: validation, where the
    thresholds are chosen and saved); see the module docstring. ``tta``: ``flips`` (the three
    mirrors), ``rot90z`` (the three turns about z), ``all`` or True (both). ``progress(done,
    total)`` counts the tomograms' windows (model calls)."""
    from streamvol.predict import Peaks, Predictor, split_sources
    from streamvol.predict._run import THRESHOLDS, load_choices, settings_from
    from streamvol.predict._write import write_picks_csv

    run, task = Path(trainer.run_dir), trainer.task
    writes = getattr(trainer, "main", True)
    choosing = split is None
    config = trainer.config
    if split:
        splits = [split]
    elif config.val_split:
        splits = [config.val_split]
    else:  # cross-validation: the validation folds
        splits = [f"fold{k}" for k in config.val_folds or ()]
    if not splits:
        report: dict[str, Any] = {"task": "detection", "note": "no validation split"}
        if trainer.history and writes:
            report["plots"] = {"curves": str(plot_curves(trainer.history, run))}
        return report
    split_name = ",".join(splits)
    predictor = Predictor.from_trainer(trainer)
    choices = {} if choosing else load_choices(run)
    saved_window, saved_peaks = settings_from(choices)
    if choosing or saved_window is None:  # the run's inference settings, from its config
        window = predictor.window(
            None,
            patch=config.predict_patch,
            batch_size=config.batch_size,
            tta=tuple(config.predict_tta),
        )
        peaks = Peaks(method=config.peak_method, distance=config.peak_distance)
    else:
        window, peaks = saved_window, saved_peaks
    kinds = _window_tta(tta)
    if kinds:
        window = predictor.window(window, tta=kinds)
    thresholds = choices.get("thresholds", {})
    grids = [GRID if choosing else [thresholds.get(n, 0.5)] for n in task.class_names]
    sources = [s for name in splits for s in split_sources(trainer.manifest, name)]
    counts, rows, scored = _count(predictor, sources, grids, window, peaks, progress)
    per_type: dict[str, dict[str, Any]] = {}
    chosen: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    for k, name in enumerate(task.class_names):
        if counts[k][0, 0] + counts[k][0, 2] == 0:  # no reference of this type: not scored
            chosen[name] = float(thresholds.get(name, 0.5))
            continue
        best = best_threshold(grids[k], counts[k], BETA)
        chosen[name] = best["threshold"]
        curves[name] = best["curve"]
        tp, fp, fn = best["tp"], best["fp"], best["fn"]
        per_type[name] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
            "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
            "fbeta": fbeta_from_counts(tp, fp, fn, BETA),
            "weight": task.weights[k],
            "threshold": chosen[name],
        }
    report = {
        "task": "detection",
        "split": split_name,
        "score": weighted_score(task, {n: r["fbeta"] for n, r in per_type.items()}),
        "per_type": per_type,
        "experiments": scored,
        "thresholds": chosen,
        "thresholds_from": split_name if choosing else choices.get("from", "default"),
        "window": asdict(window),
        "peaks": asdict(peaks),
        "beta": BETA,
        "tta": ",".join(kinds) if kinds else None,
        **identity(trainer),
    }
    if not writes:
        return report
    plots = {}
    if choosing:
        write_json_atomic(
            run / THRESHOLDS,
            {
                "thresholds": chosen,
                "from": split_name,
                "experiments": scored,
                "settings": {"window": asdict(window), "peaks": asdict(peaks)},
            },
        )
        if curves:
            from streamvol.metrics import plot_thresholds

            plots["thresholds"] = str(
                plot_thresholds(GRID, curves, chosen, run / f"{prefix}_thresholds.png")
            )
        if trainer.history:
            plots["curves"] = str(plot_curves(trainer.history, run))
    else:
        report["picks_csv"] = str(write_picks_csv(run / f"{prefix}_picks.csv", rows))
    report["plots"] = plots
    write_json_atomic(run / f"{prefix}_report.json", json.loads(json.dumps(report)))
    return report


def _window_tta(tta: str | bool | None) -> tuple[str, ...]:
    """``evaluate --tta`` for whole tomograms, in the sliding window's kinds."""
    from streamvol.train import tta as tta_mod

    if tta is True:
        return ("flips", "rot90")
    kind = tta_mod.parse(tta)
    return {None: (), "flips": ("flips",), "rot90z": ("rot90",)}.get(kind, ("flips", "rot90"))
