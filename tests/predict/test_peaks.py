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
    np.testing.assert_allclose(coords[0], [6.5, 6.5, 6.5], atol=1e-9)
    heat = _heatmap(CENTRES)
    low, low_scores = find_peaks(heat, 0.05, 3.0)
    for t in (0.65, 0.75, 0.85):
        high, _ = find_peaks(heat, t, 3.0)
        np.testing.assert_array_equal(high, low[low_scores >= t])


def test_a_saturated_particle_wider_than_the_distance_is_one_pick():
    """A confident model's probability is 1.0 across each whole particle (float32 sigmoid
    saturates): a plateau of diameter 2r against a suppression distance of r / 2 is still one
    pick, at its centre; two such particles, two picks."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    centres = np.array([[10.0, 12.0, 11.0], [19.0, 28.0, 24.0]])
    prob = np.full(SHAPE, 0.01, np.float32)
    for c in centres:
        prob[((grid - c) ** 2).sum(-1) <= 6.0**2] = 1.0
    coords, scores = find_peaks(prob, 0.5, 3.0)
    assert len(coords) == 2
    np.testing.assert_allclose(coords[np.argsort(coords[:, 0])], centres, atol=1e-9)
    np.testing.assert_array_equal(scores, [1.0, 1.0])


def test_components_drop_small_ones_and_bad_arguments_raise():
    blobs = _heatmap(CENTRES[:2])
    blobs[25, 2, 2] = 0.9  # a single hot voxel
    assert len(find_peaks(blobs, 0.3, 2.0, method="cc")[0]) == 3
    assert len(find_peaks(blobs, 0.3, 2.0, method="cc", min_size=5)[0]) == 2
    with pytest.raises(BadOption, match="method='max'"):
        find_peaks(blobs, 0.3, 2.0, method="max")
    with pytest.raises(BadInput, match="\\(D, H, W\\)"):
        find_peaks(blobs[0], 0.3, 2.0)


def _anisotropic() -> np.ndarray:
    prob = np.zeros((12, 24, 24), np.float32)
    prob[4, 8, 6] = 0.9
    prob[4, 8, 11] = 0.8  # 5 voxels of 10 A away in x: 50 A
    prob[7, 8, 6] = 0.7  # 3 voxels of 40 A away in z: 120 A
    return prob


def test_nms_distance_per_axis_is_physical_on_anisotropic_voxels():
    """Voxels of (40, 10, 10) A, a 150 A particle at distance 0.5 (75 A): the peak 50 A away
    goes, the one 120 A away stays; a mean voxel (20 A, 3.75 voxels) would do the opposite."""
    coords, scores = find_peaks(_anisotropic(), 0.5, (75 / 40, 75 / 10, 75 / 10))
    np.testing.assert_array_equal(coords, [[4, 8, 6], [7, 8, 6]])
    np.testing.assert_array_equal(scores, np.float32([0.9, 0.7]))
    mean, _ = find_peaks(_anisotropic(), 0.5, 3.75)
    np.testing.assert_array_equal(mean, [[4, 8, 6], [4, 8, 11]])
    with pytest.raises(BadOption, match="distance"):
        find_peaks(_anisotropic(), 0.5, (1.0, 0.0, 1.0))


def test_a_predictor_takes_peaks_in_angstrom_on_anisotropic_voxels():
    from types import SimpleNamespace

    import torch

    from streamvol.predict import Peaks, Predictor

    task = SimpleNamespace(kind="detection", class_names=("ribosome",), radii_angstrom=(150.0,))
    predictor = Predictor(torch.nn.Identity(), task, {}, device=torch.device("cpu"))
    voxel = np.array([40.0, 10.0, 10.0])
    picks = predictor.peaks(_anisotropic()[None], voxel, {"ribosome": 0.5}, Peaks())
    np.testing.assert_array_equal(picks["ribosome"][0], [[160, 80, 60], [280, 80, 60]])
