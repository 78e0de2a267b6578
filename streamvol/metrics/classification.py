"""Classification report: every scalar metric a run folder needs, computed with scikit-learn.

Binary tasks take ``scores`` of shape (N,), the probability of class 1, and predict class 1
where ``score >= threshold`` (the same ``>=`` rule as ``sklearn.metrics.roc_curve``).
Multi-class tasks take (N, C) probabilities and predict the argmax. Rows of weight 0 are
padding (see DESIGN.md, "Equal work per rank") and are dropped before anything is computed;
the remaining weights are passed to scikit-learn as ``sample_weight``.

Undefined values are ``None`` with a line in ``notes``, never an exception and never NaN:
ROC AUC needs both outcomes of a class in ``y_true``, average precision needs a positive,
specificity needs a negative. Precision, recall and F-scores follow scikit-learn's
``zero_division=0`` convention instead, so that they stay comparable across epochs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from streamvol.errors import BadInput, BadOption
from streamvol.metrics._arrays import as_numpy, check_labels, check_scores, sample_mask

DEFAULT_THRESHOLD = 0.5


def classification_report(
    y_true: Any,
    scores: Any,
    *,
    class_names: Sequence[str],
    threshold: float | None = None,
    weights: Any = None,
    beta: float = 2.0,
) -> dict[str, Any]:
    """Scalar metrics, confusion matrices and a per-class table, as JSON-ready Python values.

    ``y_true`` (N,) integer class ids; ``scores`` (N,) positive-class probabilities when
    ``class_names`` has two entries (an (N, 2) array is accepted and its column 1 used), else
    (N, C) class probabilities. ``threshold`` is binary only (default 0.5); ``weights`` (N,)
    sample weights, 0 marking padding. Multi-class averages are macro averages over the
    classes present in ``y_true`` or the predictions (scikit-learn's default label set);
    ``roc_auc`` and ``average_precision`` are macro one-vs-rest and ``None`` when any
    class leaves them undefined (the defined per-class values are still reported).

    Returned keys: task, class_names, n_samples, n_padding, threshold, beta, accuracy,
    balanced_accuracy, precision, recall, sensitivity, specificity, f1, fbeta, roc_auc,
    average_precision, top2_accuracy (multi-class only), confusion_matrix,
    confusion_matrix_normalized (rows sum to 1; a class with no sample gives a row of 0),
    per_class ({name: precision, recall, specificity, f1, fbeta, support, roc_auc,
    average_precision}), notes.
    """
    names = [str(c) for c in class_names]
    n_classes = len(names)
    if n_classes < 2:
        raise BadOption("class_names", names, "expected at least 2 classes")
    binary = n_classes == 2
    y = as_numpy(y_true, "y_true")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise BadInput(f"y_true: expected shape (N,), got {y.shape}")
    s = check_scores(as_numpy(scores, "scores"), n_classes, len(y))
    if not binary and threshold is not None:
        raise BadOption("threshold", threshold, f"only binary tasks take one, not {names}")
    y = check_labels(y, n_classes)
    keep, w = sample_mask(weights, len(y))
    y, s = y[keep], s[keep]
    if len(y) == 0:
        raise BadInput("y_true: expected at least one sample, got 0")
    thr = None
    if binary:
        thr = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        pred = (s >= thr).astype(np.int64)
    else:
        pred = s.argmax(axis=1)

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if binary:
            report = _binary_metrics(y, s, pred, w, beta, notes)
            proba = np.stack([1.0 - s, s], axis=1)
        else:
            report = _multiclass_metrics(y, s, pred, w, beta, names, notes)
            proba = s
        labels = list(range(n_classes))
        cm = confusion_matrix(y, pred, labels=labels, sample_weight=w)
        cm_norm = confusion_matrix(y, pred, labels=labels, sample_weight=w, normalize="true")
        per_class = _per_class(y, proba, pred, w, beta, names, cm, notes)
        accuracy = float(accuracy_score(y, pred, sample_weight=w))
        balanced = float(balanced_accuracy_score(y, pred, sample_weight=w))
    for note in (f"{c.category.__name__}: {c.message}" for c in caught):
        if note not in notes:
            notes.append(note)

    return {
        "task": "binary" if binary else "multiclass",
        "class_names": names,
        "n_samples": len(y),
        "n_padding": int((~keep).sum()),
        "threshold": thr,
        "beta": float(beta),
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        **report,
        "confusion_matrix": _matrix(cm),
        "confusion_matrix_normalized": np.nan_to_num(cm_norm).astype(float).tolist(),
        "per_class": per_class,
        "notes": notes,
    }


def specificity_per_class(cm: np.ndarray) -> list[float | None]:
    """One-vs-rest specificity TN / (TN + FP) of each class from a (C, C) confusion matrix.

    Rows are true classes, columns predictions (scikit-learn's layout). ``None`` for a class
    whose every sample is of that class (no negative, specificity undefined).
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    out: list[float | None] = []
    for k in range(cm.shape[0]):
        fp = cm[:, k].sum() - cm[k, k]
        negatives = total - cm[k, :].sum()
        out.append(None if negatives == 0 else float((negatives - fp) / negatives))
    return out


def _binary_metrics(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    w: np.ndarray | None,
    beta: float,
    notes: list[str],
) -> dict[str, Any]:
    kw: dict[str, Any] = {"sample_weight": w, "zero_division": 0}
    recall = float(recall_score(y, pred, **kw))
    cm = confusion_matrix(y, pred, labels=[0, 1], sample_weight=w)
    both = 0 < y.sum() < len(y)
    if not both:
        notes.append(f"roc_auc: undefined, y_true holds only class {int(y[0])}")
    if not y.any():
        notes.append("average_precision: undefined, y_true holds no positive sample")
    specificity = specificity_per_class(cm)[1]
    if specificity is None:
        notes.append("specificity: undefined, y_true holds no negative sample")
    return {
        "precision": float(precision_score(y, pred, **kw)),
        "recall": recall,
        "sensitivity": recall,
        "specificity": specificity,
        "f1": float(f1_score(y, pred, **kw)),
        "fbeta": float(fbeta_score(y, pred, beta=beta, **kw)),
        "roc_auc": float(roc_auc_score(y, s, sample_weight=w)) if both else None,
        "average_precision": (
            float(average_precision_score(y, s, sample_weight=w)) if y.any() else None
        ),
    }


def _multiclass_metrics(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    w: np.ndarray | None,
    beta: float,
    names: list[str],
    notes: list[str],
) -> dict[str, Any]:
    kw: dict[str, Any] = {"sample_weight": w, "zero_division": 0, "average": "macro"}
    recall = float(recall_score(y, pred, **kw))
    n_classes = len(names)
    cm = confusion_matrix(y, pred, labels=list(range(n_classes)), sample_weight=w)
    spec = specificity_per_class(cm)
    seen = np.union1d(y, pred)
    spec_seen = [spec[k] for k in seen if spec[k] is not None]
    aucs = [_auc(y == k, s[:, k], w) for k in range(n_classes)]
    aps = [_ap(y == k, s[:, k], w) for k in range(n_classes)]
    missing_auc = [names[k] for k, a in enumerate(aucs) if a is None]
    missing_ap = [names[k] for k, a in enumerate(aps) if a is None]
    if missing_auc:
        notes.append(
            f"roc_auc: undefined (macro one-vs-rest) because y_true lacks a positive or a "
            f"negative for {missing_auc}; per-class values given for the others"
        )
    if missing_ap:
        notes.append(
            f"average_precision: undefined (macro one-vs-rest) because y_true holds no "
            f"sample of {missing_ap}; per-class values given for the others"
        )
    return {
        "precision": float(precision_score(y, pred, **kw)),
        "recall": recall,
        "sensitivity": recall,
        "specificity": float(np.mean(spec_seen)) if spec_seen else None,
        "f1": float(f1_score(y, pred, **kw)),
        "fbeta": float(fbeta_score(y, pred, beta=beta, **kw)),
        "roc_auc": None if missing_auc else float(np.mean(aucs)),
        "average_precision": None if missing_ap else float(np.mean(aps)),
        "top2_accuracy": float(
            top_k_accuracy_score(y, s, k=2, labels=list(range(n_classes)), sample_weight=w)
        ),
    }


def _per_class(
    y: np.ndarray,
    proba: np.ndarray,
    pred: np.ndarray,
    w: np.ndarray | None,
    beta: float,
    names: list[str],
    cm: np.ndarray,
    notes: list[str],
) -> dict[str, dict[str, Any]]:
    labels = list(range(len(names)))
    kw: dict[str, Any] = {"labels": labels, "sample_weight": w, "zero_division": 0}
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average=None, **kw)
    fbeta = fbeta_score(y, pred, beta=beta, average=None, **kw)
    support = np.bincount(y, minlength=len(names))
    spec = specificity_per_class(cm)
    absent = [names[k] for k in labels if support[k] == 0]
    if absent:
        notes.append(f"classes absent from y_true: {absent}")
    return {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "specificity": spec[k],
            "f1": float(f1[k]),
            "fbeta": float(fbeta[k]),
            "support": int(support[k]),
            "roc_auc": _auc(y == k, proba[:, k], w),
            "average_precision": _ap(y == k, proba[:, k], w),
        }
        for k, name in enumerate(names)
    }


def _auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray | None) -> float | None:
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, score, sample_weight=w))


def _ap(positive: np.ndarray, score: np.ndarray, w: np.ndarray | None) -> float | None:
    if not positive.any():
        return None
    return float(average_precision_score(positive, score, sample_weight=w))


def _matrix(cm: np.ndarray) -> list[list[int]] | list[list[float]]:
    if np.all(cm == np.round(cm)):
        return cm.astype(np.int64).tolist()
    return cm.astype(float).tolist()
