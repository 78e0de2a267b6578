"""Particle-picking F-beta of the CZII CryoET Object Identification challenge (Kaggle, 2024).

Source: the competition's metric notebook (kaggle.com/code/metric/czi-cryoet-84969), derived
from ``cellcanvas/album-catalog`` ``solutions/copick/compare-picks/solution.py``; its
``compute_metrics`` and ``score(solution, submission, row_id_column_name,
distance_multiplier=0.5, beta=4)``. The rules, reproduced here:

1. Per experiment (tomogram) and particle type, a reference particle is found when some
   predicted point of that type lies within ``radius * distance_multiplier`` of it (distance
   ``<=``, in the unit of the radii: Angstrom for CZII). ``TP`` = reference particles found
   (each counted once however many predictions reach it), ``FP`` = predictions - TP,
   ``FN`` = references - TP.
2. Predictions for experiments absent from the reference are dropped; a predicted type not
   in the particle table is an error; only types with reference points are scored.
3. TP, FP, FN are summed over experiments per type; precision, recall and
   ``F = (1 + b^2) P R / (b^2 P + R)`` per type (0 where undefined).
4. The score is ``sum(weight * F)`` over the scored types divided by the sum of all weights
   in the table (CZII: 7; beta-amylase has weight 0, so it counts for nothing).

Rule 1 is not a strict one-to-one matching: one prediction within reach of two reference
particles finds both (the reference's comment calls this "extremely rare"; for
non-overlapping particles of one type it cannot happen at multiplier 0.5, their centres
being at least two radii apart). ``matching="one_to_one"`` uses a maximum bipartite
matching instead; the two agree whenever no prediction reaches two particles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from streamvol.errors import BadInput, BadOption
from streamvol.metrics._arrays import as_numpy, check_labels


@dataclass(frozen=True, slots=True)
class ParticleType:
    """A particle type's radius (in the unit the scaled points use) and its score weight."""

    radius: float
    weight: float


CZII_PARTICLES: Mapping[str, ParticleType] = MappingProxyType(
    {
        "apo-ferritin": ParticleType(radius=60.0, weight=1.0),
        "beta-amylase": ParticleType(radius=65.0, weight=0.0),
        "beta-galactosidase": ParticleType(radius=90.0, weight=2.0),
        "ribosome": ParticleType(radius=150.0, weight=1.0),
        "thyroglobulin": ParticleType(radius=130.0, weight=2.0),
        "virus-like-particle": ParticleType(radius=135.0, weight=1.0),
    }
)
"""The CZII challenge's particle table: radii in Angstrom, weights of the final score."""

Matching = Literal["kaggle", "one_to_one"]


def match_points(
    reference: Any, predicted: Any, max_distance: float, *, matching: Matching = "kaggle"
) -> tuple[int, int, int]:
    """(TP, FP, FN) of predicted points against reference points, (N, 3) each.

    ``kaggle``: TP is the number of reference points with a prediction within
    ``max_distance`` (rule 1 of the module docstring). ``one_to_one``: TP is the size of a
    maximum matching pairing each prediction with at most one reference point.
    """
    ref = _points(reference, "reference")
    cand = _points(predicted, "predicted")
    if len(ref) == 0 or len(cand) == 0:
        return 0, len(cand), len(ref)
    if matching not in ("kaggle", "one_to_one"):
        raise BadOption("matching", matching, "expected 'kaggle' or 'one_to_one'")
    # hits[i]: indices of the reference points within max_distance (<=) of prediction i.
    hits = cKDTree(cand).query_ball_tree(cKDTree(ref), r=max_distance)
    if matching == "kaggle":
        tp = len({j for row in hits for j in row})
    else:
        rows = np.repeat(np.arange(len(hits)), [len(h) for h in hits])
        cols = np.fromiter((j for h in hits for j in h), dtype=np.int64, count=len(rows))
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(cand), len(ref)))
        tp = int((maximum_bipartite_matching(graph.tocsr(), perm_type="column") >= 0).sum())
    return tp, len(cand) - tp, len(ref) - tp


def picking_score(
    reference: Mapping[str, Mapping[str, Any]],
    predicted: Mapping[str, Mapping[str, Any]],
    *,
    particles: Mapping[str, ParticleType] = CZII_PARTICLES,
    voxel_size: float | Sequence[float] = 1.0,
    distance_multiplier: float = 0.5,
    beta: float = 4.0,
    matching: Matching = "kaggle",
) -> dict[str, Any]:
    """The CZII weighted F-beta of predicted particle centres against reference ones.

    ``reference`` and ``predicted`` map experiment id -> particle type -> (N, 3) points.
    Points are multiplied by ``voxel_size`` (a number, or one per axis in the points' axis
    order) to reach the unit of the radii: pass voxel coordinates with the voxel size in
    Angstrom, or Angstrom coordinates with ``voxel_size=1``.

    Returned keys: score, per_type ({type: tp, fp, fn, precision, recall, fbeta, weight,
    max_distance}), weight_total, beta, distance_multiplier, matching.
    """
    scale = np.asarray(voxel_size, dtype=np.float64)
    if scale.shape not in ((), (3,)) or np.any(scale <= 0):
        raise BadOption("voxel_size", voxel_size, "expected a positive number or 3 of them")

    def scaled(points: Any, where: str) -> np.ndarray:
        return _points(points, where) * scale

    ref = {
        exp: {name: scaled(pts, f"reference[{exp!r}][{name!r}]") for name, pts in types.items()}
        for exp, types in reference.items()
    }
    for exp, types in ref.items():
        _check_types(types, particles, f"reference[{exp!r}]")
        _check_unique(types, f"reference[{exp!r}]")
    # The reference lists only experiments and types that have particles (rows of a table).
    experiments = [exp for exp, types in ref.items() if any(len(p) for p in types.values())]
    scored = [n for n in particles if any(len(ref[e].get(n, ())) for e in experiments)]
    pred: dict[str, dict[str, np.ndarray]] = {}
    for exp in experiments:
        types = predicted.get(exp, {})
        _check_types(types, particles, f"predicted[{exp!r}]")
        pred[exp] = {n: scaled(p, f"predicted[{exp!r}][{n!r}]") for n, p in types.items()}

    empty = np.zeros((0, 3))
    per_type: dict[str, dict[str, Any]] = {}
    total = 0.0
    for name in scored:
        max_distance = particles[name].radius * distance_multiplier
        tp = fp = fn = 0
        for exp in experiments:
            counts = match_points(
                ref[exp].get(name, empty),
                pred[exp].get(name, empty),
                max_distance,
                matching=matching,
            )
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        precision, recall, fbeta = _prf(tp, fp, fn, beta)
        weight = particles[name].weight
        total += fbeta * weight
        per_type[name] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": float(precision),
            "recall": float(recall),
            "fbeta": fbeta,
            "weight": float(weight),
            "max_distance": float(max_distance),
        }
    weight_total = float(sum(p.weight for p in particles.values()))
    return {
        "score": total / weight_total if weight_total > 0 else 0.0,
        "per_type": per_type,
        "weight_total": weight_total,
        "beta": float(beta),
        "distance_multiplier": float(distance_multiplier),
        "matching": matching,
    }


def particle_weight(name: str, weights: Mapping[str, float] | None = None) -> float:
    """A type's score weight: ``weights[name]`` when given, else the CZII table's, else 1."""
    if weights and name in weights:
        return float(weights[name])
    return CZII_PARTICLES[name].weight if name in CZII_PARTICLES else 1.0


def best_threshold(thresholds: Sequence[float], counts: Any, beta: float = 4.0) -> dict[str, Any]:
    """The threshold of a grid that maximises F-beta, from (T, 3) TP, FP, FN counts at each.

    Where several neighbouring thresholds share the best F-beta (they keep the same picks on
    this data), the middle one is chosen: the farthest from where the picks change. Returns
    threshold, fbeta, tp, fp, fn at it, and the F-beta of every threshold (``curve``).
    """
    grid = np.asarray(thresholds, dtype=np.float64)
    table = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    if len(grid) == 0 or len(grid) != len(table):
        raise BadInput(
            f"expected one (tp, fp, fn) row per threshold, got {table.shape} rows "
            f"for {len(grid)} thresholds"
        )
    curve = np.array([fbeta_from_counts(int(a), int(b), int(c), beta) for a, b, c in table])
    best = curve.max()
    runs, start = [], None
    for i, hit in enumerate(np.append(np.isclose(curve, best, rtol=0, atol=1e-12), False)):
        if hit and start is None:
            start = i
        elif not hit and start is not None:
            runs.append((start, i - 1))
            start = None
    lo, hi = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    pick = (lo + hi) // 2
    tp, fp, fn = (int(v) for v in table[pick])
    return {
        "threshold": float(grid[pick]),
        "fbeta": float(curve[pick]),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "curve": [float(v) for v in curve],
    }


def fbeta_from_counts(tp: int, fp: int, fn: int, beta: float) -> float:
    """F-beta from counts as the CZII reference computes it (0 where precision + recall = 0)."""
    return _prf(tp, fp, fn, beta)[2]


def _prf(tp: int, fp: int, fn: int, beta: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    if precision + recall == 0:
        return float(precision), float(recall), 0.0
    b2 = beta * beta
    return (
        float(precision),
        float(recall),
        float((1 + b2) * precision * recall / (b2 * precision + recall)),
    )


def points_by_type(points: Any, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Split an (N, 4) array of ``z, y, x, class id`` (the shard format) into {name: (M, 3)}."""
    arr = as_numpy(points, "points").astype(np.float64, copy=False)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BadInput(f"points: expected (N, 4) rows of z, y, x, class id, got {arr.shape}")
    ids = check_labels(arr[:, 3], len(class_names), "points[:, 3]")
    return {name: arr[ids == k, :3] for k, name in enumerate(class_names)}


def _points(points: Any, where: str) -> np.ndarray:
    arr = as_numpy(points, where).astype(np.float64, copy=False)
    if arr.size == 0:
        return arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise BadInput(f"{where}: expected (N, 3) points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadInput(f"{where}: expected finite coordinates, got NaN or Inf")
    return arr


def _check_types(types: Mapping[str, Any], particles: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(types) - set(particles))
    if unknown:
        raise BadInput(f"{where}: unknown particle types {unknown}, expected {list(particles)}")


def _check_unique(types: Mapping[str, np.ndarray], where: str) -> None:
    stacked = np.concatenate([p for p in types.values() if len(p)] or [np.zeros((0, 3))])
    if len(np.unique(stacked, axis=0)) != len(stacked):
        raise BadInput(f"{where}: duplicate reference points (the reference forbids them)")
