"""PNG plots of a run: training curves, ROC and PR curves, confusion matrices, CV ROC,
segmentations, picks and reconstructions.

Figures are made with ``matplotlib.figure.Figure`` and the Agg canvas, never through
``pyplot``: no global figure registry to leak into, nothing to close, safe beside a GUI
backend. Each function writes ``path`` atomically (``.partial`` then rename), creates its
folder, and returns the path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from streamvol.core.files import save_figure
from streamvol.errors import BadInput, ShapeMismatch
from streamvol.metrics._arrays import as_numpy, check_labels, check_scores, sample_mask

NOT_METRICS = frozenset({"epoch", "step", "lr", "learning_rate", "time", "seconds", "elapsed"})
"""History keys that are bookkeeping, not metrics, left out of the default metric panel."""


def plot_history(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Loss curves (every key containing ``loss``) and metric curves, one point per epoch.

    ``history`` is the list of per-epoch dicts (the lines of ``metrics.jsonl``); the x axis
    is their ``epoch`` value, else 1, 2, ... . A key missing from some epochs (validation every
    few epochs) is drawn through the epochs that hold it.
    ``metrics`` picks the metric keys; by default every numeric key that is not a loss and
    not bookkeeping (:data:`NOT_METRICS`).
    """
    if not history:
        raise BadInput("history: expected at least one epoch, got an empty list")
    keys = list(dict.fromkeys(k for row in history for k, v in row.items() if _is_number(v)))
    losses = [k for k in keys if "loss" in k]
    if metrics is None:
        metrics = [k for k in keys if "loss" not in k and k not in NOT_METRICS]
    else:
        unknown = [k for k in metrics if k not in keys]
        if unknown:
            raise BadInput(f"metrics: {unknown} appear in no epoch; numeric keys are {keys}")
    x = [row["epoch"] if _is_number(row.get("epoch")) else i + 1 for i, row in enumerate(history)]
    panels = [(name, ks) for name, ks in (("loss", losses), ("metric", list(metrics))) if ks]
    if not panels:
        raise BadInput("history: no numeric key to plot")
    fig = _figure(figsize=(6.0 * len(panels), 4.2))
    for i, (ylabel, ks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in ks:
            held = [
                (e, float(row[k]))
                for e, row in zip(x, history, strict=True)
                if _is_number(row.get(k))
            ]
            ax.plot(*zip(*held, strict=True), marker="o", markersize=3, label=k)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title("losses" if ylabel == "loss" else "metrics", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_roc(
    y_true: Any,
    scores: Any,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    weights: Any = None,
    title: str = "ROC",
) -> Path:
    """ROC curve (binary) or one-vs-rest ROC curves (multi-class), AUC in the legend.

    Inputs as :func:`streamvol.metrics.classification_report`; a class whose curve is
    undefined (no positive or no negative in ``y_true``) is listed as such in the legend.
    ``title`` should say what was scored (``ROC: spots, test split``).
    """
    fig = _figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, positive, score, w in _one_vs_rest(y_true, scores, class_names, weights):
        if positive.all() or not positive.any():
            ax.plot([], [], " ", label=f"{name}: undefined (one outcome only)")
            continue
        fpr, tpr, _ = roc_curve(positive, score, sample_weight=w)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    _axes(ax, "false positive rate", "true positive rate", title, legend="lower right")
    return save_figure(fig, path)


def plot_pr(
    y_true: Any,
    scores: Any,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    weights: Any = None,
    title: str = "precision-recall",
) -> Path:
    """Precision-recall curve (binary) or one-vs-rest curves, average precision in the legend;
    dotted lines: each class's prevalence (a random classifier's precision)."""
    fig = _figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, positive, score, w in _one_vs_rest(y_true, scores, class_names, weights):
        if not positive.any():
            ax.plot([], [], " ", label=f"{name}: undefined (no positive)")
            continue
        precision, recall, _ = precision_recall_curve(positive, score, sample_weight=w)
        ap = average_precision_score(positive, score, sample_weight=w)
        line = ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")[0]
        prevalence = np.average(positive, weights=w)
        ax.axhline(
            prevalence,
            linestyle=":",
            linewidth=0.8,
            color=line.get_color(),
            label=f"{name}: prevalence {prevalence:.2f}",
        )
    _axes(ax, "recall", "precision", title, legend="lower left")
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: Any,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    title: str | None = None,
) -> Path:
    """Raw and row-normalised confusion matrix side by side, every cell annotated.

    ``matrix`` (C, C) has true classes in rows and predictions in columns, as
    ``classification_report(...)["confusion_matrix"]``; ``title`` above both.
    """
    cm = as_numpy(matrix, "matrix").astype(np.float64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ShapeMismatch(f"matrix: expected ({n}, {n}) for {n} class names, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    integer = bool(np.all(cm == np.round(cm)))
    side = max(4.0, 0.6 * n + 2.5)
    fig = _figure(figsize=(2 * side + 1.0, side))
    for i, (data, panel, fmt) in enumerate(
        ((cm, "counts", ".0f" if integer else ".2f"), (norm, "fraction of each true class", ".2f"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        vmax = 1.0 if i else max(float(cm.max()), 1.0)
        image = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        for (r, c), value in np.ndenumerate(data):
            dark = value > 0.5 * vmax
            ax.text(
                c,
                r,
                format(value, fmt),
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize="small",
            )
        ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(class_names))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(panel, fontsize="medium")
    fig.suptitle(title or "confusion matrix")
    return save_figure(fig, path)


def plot_cv_roc(
    y_trues: Sequence[Any],
    scores: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    weights: Sequence[Any] | None = None,
    title: str = "ROC, cross-validation folds",
) -> Path:
    """Every fold's ROC curve on one plot, with the mean curve and a +-1 std band (ddof=1).

    One ``y_true`` and one ``scores`` array per fold, as for :func:`plot_roc`. Multi-class
    folds are drawn as micro-averaged one-vs-rest curves (every (sample, class) pair one
    binary decision). The mean interpolates each fold's TPR on a common FPR grid.
    """
    if len(y_trues) != len(scores) or not y_trues:
        raise ShapeMismatch(
            f"scores: expected one array per fold ({len(y_trues)}), got {len(scores)}"
        )
    if weights is not None and len(weights) != len(y_trues):
        raise ShapeMismatch(f"weights: expected one array per fold, got {len(weights)}")
    grid = np.linspace(0.0, 1.0, 201)
    tprs, aucs = [], []
    fig = _figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    for k, (y, s) in enumerate(zip(y_trues, scores, strict=True)):
        positive, score, w = _micro(y, s, class_names, None if weights is None else weights[k])
        if positive.all() or not positive.any():
            ax.plot([], [], " ", label=f"fold {k + 1}: undefined (one outcome only)")
            continue
        fpr, tpr, _ = roc_curve(positive, score, sample_weight=w)
        aucs.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, linewidth=0.9, alpha=0.5, label=f"fold {k + 1} (AUC {aucs[-1]:.3f})")
        interp = np.interp(grid, fpr, tpr)
        interp[0] = 0.0
        tprs.append(interp)
    if tprs:
        mean, std = np.mean(tprs, axis=0), _std(tprs)
        mean[-1] = 1.0
        ax.plot(
            grid,
            mean,
            color="black",
            linewidth=2.0,
            label=f"mean (AUC {np.mean(aucs):.3f} ± {_std(aucs):.3f})",
        )
        ax.fill_between(
            grid,
            np.clip(mean - std, 0, 1),
            np.clip(mean + std, 0, 1),
            color="grey",
            alpha=0.25,
            label="± 1 std",
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    _axes(ax, "false positive rate", "true positive rate", title, legend="lower right")
    return save_figure(fig, path)


def plot_thresholds(
    thresholds: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    chosen: Mapping[str, float],
    path: str | os.PathLike[str],
    *,
    beta: float = 4.0,
) -> Path:
    """F-beta of each particle type against its detection threshold, the chosen one marked."""
    fig = _figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        (line,) = ax.plot(thresholds, curve, label=name)
        if name in chosen:
            t = chosen[name]
            k = int(np.argmin(np.abs(np.asarray(thresholds) - t)))
            ax.plot([t], [curve[k]], "o", color=line.get_color())
    ax.set_ylim(0, 1.02)
    _axes(
        ax,
        "threshold",
        f"F-beta (beta={beta:g})",
        "validation: F-beta per particle type",
        legend="lower left",
    )
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_picks(
    image: Any,
    reference: Mapping[str, Any],
    predicted: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    radii: Mapping[str, float],
    title: str = "",
) -> Path:
    """A 2D view of a tomogram (y, x) with reference picks as circles of the particle radius
    and predicted picks as crosses, one colour per type; points are (N, 2) y, x pixels."""
    img = as_numpy(image, "image").astype(np.float64)
    if img.ndim != 2:
        raise BadInput(f"image: expected (y, x), got shape {img.shape}")
    fig = _figure(figsize=(7.5, 7.5 * img.shape[0] / max(img.shape[1], 1) + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = np.percentile(img, [1, 99])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    cycle = [c["color"] for c in _color_cycle()]
    for i, name in enumerate(sorted(set(reference) | set(predicted))):
        colour = cycle[i % len(cycle)]
        ref = np.asarray(reference.get(name, np.zeros((0, 2))), float).reshape(-1, 2)
        pred = np.asarray(predicted.get(name, np.zeros((0, 2))), float).reshape(-1, 2)
        for y, x in ref:
            ax.add_patch(
                _circle((x, y), radii.get(name, 3.0), fill=False, color=colour, linewidth=1.2)
            )
        ax.plot(pred[:, 1], pred[:, 0], "+", color=colour, markersize=9, mew=1.6, label=name)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "circles: reference picks; crosses: predicted picks", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper right", framealpha=0.7)
    return save_figure(fig, path)


def plot_reconstructions(
    inputs: Any,
    outputs: Any,
    targets: Any,
    path: str | os.PathLike[str],
    *,
    title: str = "reconstructions",
) -> Path:
    """One row per crop: the model's input (corrupted when pretraining denoises or inpaints),
    its reconstruction and the clean crop, each the middle z slice of (N, C, D, H, W) or
    (N, D, H, W) arrays, on one grey scale per row (the clean crop's 1-99 percentiles)."""
    arrays = [_middle_slices(a, name) for a, name in ((inputs, "inputs"), (outputs, "outputs"))]
    clean = _middle_slices(targets, "targets")
    n = len(clean)
    if n == 0 or any(len(a) != n for a in arrays):
        raise ShapeMismatch(
            f"inputs, outputs, targets: expected the same number (>0) of crops, got "
            f"{[len(a) for a in arrays]} and {n}"
        )
    fig = _figure(figsize=(7.2, 2.4 * n + 0.6))
    for i in range(n):
        lo, hi = np.percentile(clean[i], [1, 99])
        for j, (img, label) in enumerate(
            ((arrays[0][i], "input"), (arrays[1][i], "reconstruction"), (clean[i], "clean crop"))
        ):
            ax = fig.add_subplot(n, 3, 3 * i + j + 1)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize="medium")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_segmentations(
    images: Any,
    targets: Any,
    predictions: Any,
    path: str | os.PathLike[str],
    *,
    dice: Sequence[float],
    class_names: Sequence[str],
    title: str = "segmentations",
    z: Sequence[int] | None = None,
) -> Path:
    """One row per crop: the image, the true mask and the predicted one over it, each a 2D
    slice ((N, H, W) arrays; masks are class ids, 0 the background); ``dice`` labels each
    row, and ``z`` the slice's index in its crop when given. One grey scale for all images;
    one colour per foreground class, the same in every panel, named in the legend."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    img = as_numpy(images, "images").astype(np.float64)
    masks = [as_numpy(targets, "targets"), as_numpy(predictions, "predictions")]
    if img.ndim != 3 or len(img) == 0:
        raise BadInput(f"images: expected (N, H, W) slices, N > 0, got shape {img.shape}")
    for m, name in zip(masks, ("targets", "predictions"), strict=True):
        if m.shape != img.shape:
            raise ShapeMismatch(f"{name}: expected the images' shape {img.shape}, got {m.shape}")
    if len(dice) != len(img):
        raise ShapeMismatch(f"dice: expected {len(img)} values (one per crop), got {len(dice)}")
    if z is not None and len(z) != len(img):
        raise ShapeMismatch(f"z: expected {len(img)} slice indices (one per crop), got {len(z)}")
    n, n_classes = len(img), len(class_names)
    colours = [c["color"] for c in _color_cycle()]
    cmap = ListedColormap([colours[(k - 1) % len(colours)] for k in range(1, max(n_classes, 2))])
    lo, hi = np.percentile(img, [1, 99])  # one grey scale: a crop of background looks dark
    fig = _figure(figsize=(7.2, 2.4 * n + 0.9))
    for i in range(n):
        for j, (mask, label) in enumerate(
            ((None, "image"), (masks[0][i], "truth"), (masks[1][i], "prediction"))
        ):
            ax = fig.add_subplot(n, 3, 3 * i + j + 1)
            ax.imshow(img[i], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            if mask is not None:
                shown = np.ma.masked_where(mask <= 0, mask)
                ax.imshow(
                    shown,
                    cmap=cmap,
                    vmin=1,
                    vmax=max(n_classes - 1, 1),
                    alpha=0.45,
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize="medium")
            if j == 0:
                where = "" if z is None else f", z {z[i]}"
                ax.set_ylabel(f"Dice {dice[i]:.3f}{where}", fontsize="small")
    handles = [
        Patch(color=cmap(k - 1), alpha=0.6, label=class_names[k]) for k in range(1, n_classes)
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 4),
            fontsize="small",
        )
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_compare(
    runs: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "model comparison",
) -> Path:
    """ROC (left) and precision-recall (right) curves of several runs on one figure.

    Each run is a mapping with ``label``, ``y_true``, ``scores``, ``class_names`` and
    optionally ``weights``: binary runs draw their positive class, multi-class runs the
    micro-averaged one-vs-rest curve. AUC and average precision go in the legends.
    """
    if not runs:
        raise BadInput("runs: expected at least one run to draw, got none")
    fig = _figure(figsize=(11.0, 5.0))
    roc_ax, pr_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for run in runs:
        positive, score, w = _micro(
            run["y_true"], run["scores"], run["class_names"], run.get("weights")
        )
        label = str(run["label"])
        if positive.all() or not positive.any():
            roc_ax.plot([], [], " ", label=f"{label}: undefined (one outcome only)")
            pr_ax.plot([], [], " ", label=f"{label}: undefined (one outcome only)")
            continue
        fpr, tpr, _ = roc_curve(positive, score, sample_weight=w)
        line = roc_ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")[0]
        precision, recall, _ = precision_recall_curve(positive, score, sample_weight=w)
        ap = average_precision_score(positive, score, sample_weight=w)
        pr_ax.step(
            recall, precision, where="post", color=line.get_color(), label=f"{label} (AP {ap:.3f})"
        )
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    _axes(roc_ax, "false positive rate", "true positive rate", "ROC", legend="lower right")
    _axes(pr_ax, "recall", "precision", "precision-recall", legend="lower left")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_scores(
    scores: Mapping[str, Mapping[str, float | None]],
    path: str | os.PathLike[str],
    *,
    ylabel: str,
    title: str,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Grouped bars in [0, 1]: one group per row of ``scores`` (particle types, volumes), one
    bar per column (precision, recall, F-beta; classes) with its value above it, ``n/a`` for
    None or NaN; ``notes`` adds a line under a group's name (TP, FP and FN; voxels)."""
    if not scores:
        raise BadInput("scores: expected at least one group to draw, got none")
    series = list(dict.fromkeys(k for row in scores.values() for k in row))
    groups = list(scores)
    width = 0.8 / max(len(series), 1)
    fig = _figure(figsize=(max(5.0, 1.1 + len(groups) * (0.35 + 0.45 * len(series))), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(groups))
    for j, name in enumerate(series):
        raw = [scores[g].get(name) for g in groups]
        values = [v if v is not None and math.isfinite(v) else None for v in raw]
        at = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(at, [v or 0.0 for v in values], width, label=name)
        for bar, v in zip(bars, values, strict=True):
            ax.text(
                bar.get_x() + width / 2,
                bar.get_height() + 0.01,
                "n/a" if v is None else f"{v:.3f}",
                ha="center",
                va="bottom",
                fontsize="x-small",
                rotation=90 if len(series) > 3 else 0,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{g}\n{notes[g]}" if notes and g in notes else g for g in groups], fontsize="small"
    )
    ax.set_ylim(0, 1.15)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(len(series), 4), loc="upper right")
    return save_figure(fig, path)


def _middle_slices(a: Any, name: str) -> np.ndarray:
    x = as_numpy(a, name).astype(np.float64)
    if x.ndim == 5:
        x = x[:, 0]
    if x.ndim != 4:
        raise BadInput(f"{name}: expected (N, C, D, H, W) or (N, D, H, W), got {x.shape}")
    return x[:, x.shape[1] // 2]


def _circle(centre: tuple[float, float], radius: float, **kwargs: Any) -> Any:
    from matplotlib.patches import Circle

    return Circle(centre, radius, **kwargs)


def _color_cycle() -> Any:
    from matplotlib import rcParams

    return rcParams["axes.prop_cycle"]


def _std(values: Any) -> Any:
    """Sample standard deviation over folds (axis 0), as ``summarise_folds`` reports it."""
    values = np.asarray(values, dtype=np.float64)
    return np.std(values, axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes(ax: Any, xlabel: str, ylabel: str, title: str, *, legend: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize="small")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _inputs(
    y_true: Any, scores: Any, class_names: Sequence[str], weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, (N, C) class scores and weights, padding rows dropped."""
    y = as_numpy(y_true, "y_true").reshape(-1)
    n_classes = len(class_names)
    s = check_scores(as_numpy(scores, "scores"), n_classes, len(y))
    y = check_labels(y, n_classes)
    keep, w = sample_mask(weights, len(y))
    y, s = y[keep], s[keep]
    if n_classes == 2:
        s = np.stack([1.0 - s, s], axis=1)
    return y, s, w


def _one_vs_rest(
    y_true: Any, scores: Any, class_names: Sequence[str], weights: Any
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, is-this-class, score, weights) per curve: the positive class only when binary."""
    y, s, w = _inputs(y_true, scores, class_names, weights)
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    return [(str(class_names[k]), y == k, s[:, k], w) for k in classes]


def _micro(
    y_true: Any, scores: Any, class_names: Sequence[str], weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y, s, w = _inputs(y_true, scores, class_names, weights)
    if len(class_names) == 2:
        return y == 1, s[:, 1], w
    onehot = y[:, None] == np.arange(len(class_names))[None, :]
    return onehot.ravel(), s.ravel(), None if w is None else np.repeat(w, len(class_names))
