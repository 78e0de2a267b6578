"""Pick the binary decision threshold on validation, to be saved and reused on test.

A sample is predicted positive where ``score >= threshold``, as in
:func:`streamvol.metrics.classification_report`. Counts at every candidate threshold come
from one sort and cumulative sums, so a sweep over every distinct score of a large
validation set costs O(N log N), not one scikit-learn call per candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamvol.errors import BadInput, BadOption
from streamvol.metrics._arrays import as_numpy, check_labels, check_scores, sample_mask

METRICS = ("balanced_accuracy", "youden", "accuracy", "f1")


def sweep_threshold(
    y_true: Any,
    scores: Any,
    *,
    metric: str = "balanced_accuracy",
    grid: Any = None,
    weights: Any = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """The threshold maximising ``metric`` on (validation) labels and scores, and the table.

    ``y_true`` (N,) of 0/1, ``scores`` (N,) positive-class probabilities, ``weights`` (N,)
    sample weights with 0 marking padding (dropped). ``metric`` is one of
    ``balanced_accuracy`` (default), ``youden`` (sensitivity + specificity - 1, same optimum),
    ``accuracy`` or ``f1``.

    Without ``grid`` the candidates are 0.5, the midpoints between consecutive distinct
    scores, and one point below the lowest and one above the highest score: every distinct
    prediction is reached, at a threshold away from the scores that reach it. Ties: among
    thresholds with the best value the one closest to 0.5 wins (0.5 itself whenever it is
    among the best), so a sweep moves the default only when that helps; equal distances
    go to the lower threshold.

    Returns ``(best_threshold, table)``; the table's arrays, sorted by threshold, are
    ``threshold``, ``value`` (the metric), ``sensitivity``, ``specificity``, ``precision``
    (0 where nothing is predicted positive), and ``tp``, ``fp``, ``tn``, ``fn``
    (weighted counts).
    """
    if metric not in METRICS:
        raise BadOption("metric", metric, f"expected one of {', '.join(METRICS)}")
    y = as_numpy(y_true, "y_true").reshape(-1)
    s = check_scores(as_numpy(scores, "scores"), 2, len(y))
    y = check_labels(y, 2)
    keep, w = sample_mask(weights, len(y))
    y, s = y[keep], s[keep]
    w = np.ones(len(y)) if w is None else w
    if y.all() or not y.any():
        raise BadInput(
            f"y_true: a threshold sweep needs both classes, got only class {int(y[0])} "
            f"in {len(y)} samples"
        )

    if grid is None:
        distinct = np.unique(s)
        candidates = np.concatenate(
            [
                [distinct[0] - 1.0, distinct[-1] + 1.0, 0.5],
                (distinct[:-1] + distinct[1:]) / 2.0,
            ]
        )
    else:
        candidates = as_numpy(grid, "grid").astype(np.float64).reshape(-1)
        if candidates.size == 0 or not np.all(np.isfinite(candidates)):
            raise BadInput("grid: expected at least one finite threshold")
    thresholds = np.unique(candidates)

    table = _threshold_table(y, s, w, thresholds)
    value = _metric(table, metric)
    table["value"] = value
    best = np.flatnonzero(value >= value.max() - 1e-12)
    distance = np.abs(thresholds[best] - 0.5)
    closest = best[distance <= distance.min() + 1e-12]  # |0.3 - 0.5| != |0.7 - 0.5| in floats
    return float(thresholds[closest[0]]), table  # thresholds ascend: the lower one wins


def _threshold_table(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, thresholds: np.ndarray
) -> dict[str, np.ndarray]:
    """Weighted confusion counts and rates at each threshold (predict positive: s >= t)."""
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    pos = np.concatenate([[0.0], np.cumsum((w * y)[order])])
    neg = np.concatenate([[0.0], np.cumsum((w * (1 - y))[order])])
    below = np.searchsorted(s_sorted, thresholds, side="left")  # samples with s < t
    fn, tn = pos[below], neg[below]
    tp, fp = pos[-1] - fn, neg[-1] - tn
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    return {
        "threshold": thresholds,
        "sensitivity": tp / pos[-1],
        "specificity": tn / neg[-1],
        "precision": precision,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _metric(t: dict[str, np.ndarray], metric: str) -> np.ndarray:
    if metric == "balanced_accuracy":
        return (t["sensitivity"] + t["specificity"]) / 2.0
    if metric == "youden":
        return t["sensitivity"] + t["specificity"] - 1.0
    if metric == "accuracy":
        return (t["tp"] + t["tn"]) / (t["tp"] + t["tn"] + t["fp"] + t["fn"])
    denom = 2 * t["tp"] + t["fp"] + t["fn"]
    return np.divide(2 * t["tp"], denom, out=np.zeros_like(denom), where=denom > 0)
