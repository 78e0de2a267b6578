"""Input checks shared by the metric modules: arrays in, numpy out, padding rows dropped."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamvol.errors import BadInput, ShapeMismatch


def as_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{name}: expected an array, got {type(x).__name__}") from exc


def check_labels(y: np.ndarray, num_classes: int, name: str = "y_true") -> np.ndarray:
    """Integer class ids in ``[0, num_classes)``, as int64; floats holding whole numbers pass."""
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)):
            raise BadInput(f"{name}: expected integer class ids, got dtype {y.dtype}")
        if not np.all(y == np.round(y)):
            raise BadInput(f"{name}: expected integer class ids, got fractional values")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise BadInput(f"{name}: expected class ids in [0, {num_classes}), got {bad}")
    return y


def sample_mask(weights: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(keep, kept weights): rows of weight 0 are padding and dropped; ``None`` weights keep all.

    The kept weights are returned as ``None`` when every kept weight is 1, so callers pass no
    ``sample_weight`` to scikit-learn at all in the common padding-only case.
    """
    if weights is None:
        return np.ones(n, dtype=bool), None
    w = as_numpy(weights, "weights").astype(np.float64, copy=False).reshape(-1)
    if w.shape[0] != n:
        raise ShapeMismatch(f"weights: expected {n} values (one per sample), got {w.shape[0]}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise BadInput("weights: expected finite values >= 0")
    keep = w > 0
    if not keep.any():
        raise BadInput(f"weights: all {n} samples have weight 0 (padding); nothing to score")
    kept = w[keep]
    return keep, (None if np.all(kept == 1.0) else kept)


def check_scores(s: np.ndarray, n_classes: int, n: int) -> np.ndarray:
    """Scores as float64: (N,) positive-class probabilities for 2 classes, else (N, C)."""
    s = s.astype(np.float64, copy=False)
    if n_classes == 2 and s.ndim == 2 and s.shape[1] in (1, 2):
        s = s[:, -1]
    expected = (n,) if n_classes == 2 else (n, n_classes)
    if s.ndim != len(expected) or (s.ndim == 2 and s.shape[1] != n_classes):
        raise BadInput(f"scores: expected shape {_shape(expected)}, got {s.shape}")
    if s.shape[0] != n:
        raise ShapeMismatch(f"scores: expected {n} rows (one per label in y_true), got {len(s)}")
    if not np.all(np.isfinite(s)):
        raise BadInput("scores: expected finite values, got NaN or Inf")
    return s


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *(str(d) for d in shape[1:])]) + (",)" if len(shape) == 1 else ")")
