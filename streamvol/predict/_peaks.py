"""Particle centres from a probability volume: max-pooling NMS peaks or connected components.

``nms``: a voxel is a peak when it is the maximum of the box of half-width ``ceil(distance)``
around it and reaches the threshold; adjacent peaks (a plateau, as a saturated probability
gives across a whole particle) are one, at the plateau's centroid; peaks closer than
``distance`` to a higher one are dropped, highest first (``distance`` per axis (z, y, x) on
anisotropic voxels: within the ellipsoid of those semi-axes); a surviving peak of one voxel
moves to the probability-weighted centroid of its 3 x 3 x 3 neighbourhood (sub-voxel; a
symmetric peak stays put). The kept set shrinks as the threshold rises (a peak's survival
depends only on higher ones), so candidates found at a low threshold and then filtered by score
equal those found at the higher one.

``cc``: voxels at or above the threshold form 26-connected components; each component of at
least ``min_size`` voxels gives its probability-weighted centroid, scored by its maximum.

Coordinates are (z, y, x) voxels of the volume, float64; scores float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from streamvol.errors import BadInput, BadOption

METHODS = ("nms", "cc")


def find_peaks(
    prob: np.ndarray,
    threshold: float,
    distance: float | Sequence[float],
    *,
    method: str = "nms",
    min_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) centres and (N,) scores in ``prob`` (D, H, W), highest score first; ``distance``
    in voxels, one for every axis or (z, y, x)."""
    if prob.ndim != 3:
        raise BadInput(f"expected a (D, H, W) probability volume, got shape {prob.shape}")
    if method not in METHODS:
        raise BadOption("method", method, f"expected one of {', '.join(METHODS)}")
    axes = np.broadcast_to(np.asarray(distance, np.float64), (3,))
    if not (np.isfinite(axes).all() and (axes > 0).all()):
        raise BadOption("distance", distance, "expected a positive number of voxels (or 3)")
    if method == "cc":
        coords, scores = _components(prob, threshold, min_size)
    else:
        coords, scores = _nms(prob, threshold, tuple(float(d) for d in axes))
    order = np.argsort(-scores, kind="stable")
    return coords[order], scores[order]


def _nms(
    prob: np.ndarray, threshold: float, distance: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    size = tuple(2 * math.ceil(d) + 1 for d in distance)
    top = ndimage.maximum_filter(prob, size=size, mode="nearest")
    peaks = (prob == top) & (prob >= threshold)
    del top
    voxels, centres = _plateaus(peaks)
    scores = prob[tuple(voxels.T)].astype(np.float32)
    keep = _suppress(voxels, scores, distance)
    single = np.isnan(centres[keep, 0])
    coords = centres[keep]
    coords[single] = _refine(prob, voxels[keep][single])
    return coords, scores[keep]


def _plateaus(peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (z, y, x) voxel per 26-connected group of ``peaks`` (adjacent maxima are equal: a
    plateau, as a saturated probability gives across a whole particle), the member nearest the
    group's centroid; and the centroid of each group of several voxels (NaN for one voxel)."""
    where = np.stack(np.nonzero(peaks), axis=1).astype(np.int64)
    if len(where) == 0:
        return where.reshape(0, 3), np.zeros((0, 3))
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3, 3), bool))
    group = labels[tuple(where.T)] - 1
    counts = np.bincount(group, minlength=n)
    centroid = (
        np.stack([np.bincount(group, weights=where[:, a], minlength=n) for a in range(3)], axis=1)
        / counts[:, None]
    )
    gap = ((where - centroid[group]) ** 2).sum(axis=1)
    nearest = np.lexsort((gap, group))  # by group, nearest first
    first = nearest[np.r_[True, group[nearest][1:] != group[nearest][:-1]]]
    centroid[counts == 1] = np.nan
    return where[first], centroid


def _suppress(
    coords: np.ndarray, scores: np.ndarray, distance: tuple[float, float, float]
) -> np.ndarray:
    """Indices kept by greedy suppression: highest first, dropping any within ``distance``."""
    if len(coords) < 2:
        return np.arange(len(coords))
    order = np.argsort(-scores, kind="stable")
    if len(set(distance)) == 1:  # integer voxels against the radius itself: ties exact
        points, r = coords, distance[0]
    else:  # the ellipsoid of semi-axes ``distance`` made the unit sphere
        points, r = coords / np.asarray(distance), 1.0
    tree = cKDTree(points)
    dropped = np.zeros(len(coords), bool)
    kept = []
    for i in order:
        if dropped[i]:
            continue
        kept.append(i)
        dropped[tree.query_ball_point(points[i], r=r)] = True
    return np.asarray(kept, np.int64)


def _refine(prob: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Each integer peak moved to the probability-weighted centroid of its 3^3 neighbourhood."""
    out = coords.astype(np.float64)
    if len(coords) == 0:
        return out.reshape(0, 3)
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    voxels = coords[:, None, :] + offsets[None]
    inside = ((voxels >= 0) & (voxels < np.asarray(prob.shape))).all(-1)
    clipped = np.clip(voxels, 0, np.asarray(prob.shape) - 1)
    w = prob[clipped[..., 0], clipped[..., 1], clipped[..., 2]].astype(np.float64) * inside
    w = np.clip(w, 0, None)
    total = w.sum(1, keepdims=True)
    ok = total[:, 0] > 0
    out[ok] = (w[ok, :, None] * voxels[ok]).sum(1) / total[ok]
    return out


def _components(prob: np.ndarray, threshold: float, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    mask = prob >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0, np.float32)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(mask, labels, index)
    keep = index[sizes >= max(min_size, 1)]
    if len(keep) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.float32)
    coords = np.asarray(ndimage.center_of_mass(prob, labels, keep), np.float64).reshape(-1, 3)
    scores = np.asarray(ndimage.maximum(prob, labels, keep), np.float32)
    return coords, scores
