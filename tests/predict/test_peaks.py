"""Peaks of synthetic heatmaps and blobs: every particle found within one voxel, once."""

from __future__ import annotations

import numpy as np
import pytest

from streamvol.errors import BadInput, BadOption
from streamvol.predict import find_peaks

SHAPE = (30, 40, 36)
CENTRES = np.array([[6.3, 8.7, 9.2], [15.0, 20.4, 27.6], [22.8, 31.1, 10.5], [8.5, 30.2, 25.9]])


def _heatmap(centres: np.ndarray, sigma: float = 1.5, shape=SHAPE) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    heat = np.zeros(shape)
    for i, c in enumerate(centres):
        peak = 0.9 - 0.1 * i
        heat = np.maximum(heat, peak * np.exp(-((grid - c) ** 2).sum(-1) / (2 * sigma**2)))
    return heat.astype(np.float32)


def _matched(found: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    return d.min(axis=0)


@pytest.mark.parametrize("method", ["nms", "cc"])
def test_peaks_of_a_heatmap_are_found_within_one_voxel(method):
    noise = np.random.default_rng(0).uniform(0, 0.05, SHAPE).astype(np.float32)
    coords, scores = find_peaks(_heatmap(CENTRES) + noise, 0.3, 3.0, method=method)
    assert len(coords) == len(CENTRES)
    assert (_matched(coords, CENTRES) < 1.0).all()
    assert np.all(np.diff(scores) <= 0)  # highest first
    assert scores[0] == pytest.approx(0.9, abs=0.06)


def test_nms_keeps_one_peak_per_plateau_and_threshold_filters_scores():
    flat = np.zeros((20, 20, 20), np.float32)
    flat[5:9, 5:9, 5:9] = 0.8  # a plateau: 64 equal maxima, 5.2 voxels corner to corner
    coords, _ = find_peaks(flat, 0.5, 6.0)
    assert len(coords) == 1
    np.testing.assert_allclose(coords[0], [6.5, 6.5, 6.5], atol=1.0)
    heat = _heatmap(CENTRES)
    low, low_scores = find_peaks(heat, 0.05, 3.0)
    for t in (0.65, 0.75, 0.85):
        high, _ = find_peaks(heat, t, 3.0)
        np.testing.assert_array_equal(high, low[low_scores >= t])


def test_components_drop_small_ones_and_bad_arguments_raise():
    blobs = _heatmap(CENTRES[:2])
    blobs[25, 2, 2] = 0.9  # a single hot voxel
    assert len(find_peaks(blobs, 0.3, 2.0, method="cc")[0]) == 3
    assert len(find_peaks(blobs, 0.3, 2.0, method="cc", min_size=5)[0]) == 2
    with pytest.raises(BadOption, match="method='max'"):
        find_peaks(blobs, 0.3, 2.0, method="max")
    with pytest.raises(BadInput, match="\\(D, H, W\\)"):
        find_peaks(blobs[0], 0.3, 2.0)
