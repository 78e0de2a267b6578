"""The CZII picking F-beta on hand-made points, and against brute-force oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from streamvol.metrics import (
    CZII_PARTICLES,
    fbeta_from_counts,
    match_points,
    picking_score,
    points_by_type,
)


def f4(tp: int, fp: int, fn: int) -> float:
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 17 * p * r / (16 * p + r)


RIBOSOME_REF = [[0, 0, 0], [1000, 0, 0], [0, 1000, 0]]
RIBOSOME_PRED = [
    [10, 10, 10],  # 17.3 A from the first: found
    [0, 0, 30],  # the first again: counted once, so a false positive
    [1000, 70, 0],  # 70 A <= 75 A: found
    [0, 1000, 80],  # 80 A > 75 A: false positive, third particle missed
    [500, 500, 500],  # nowhere: false positive
]


def test_hand_made_counts_and_fbeta():
    assert CZII_PARTICLES["ribosome"].radius * 0.5 == 75.0
    result = picking_score(
        {"TS_1": {"ribosome": RIBOSOME_REF}}, {"TS_1": {"ribosome": RIBOSOME_PRED}}
    )
    row = result["per_type"]["ribosome"]
    assert (row["tp"], row["fp"], row["fn"]) == (2, 3, 1)
    assert row["precision"] == pytest.approx(2 / 5) and row["recall"] == pytest.approx(2 / 3)
    assert row["fbeta"] == pytest.approx(f4(2, 3, 1))
    assert row["max_distance"] == 75.0
    assert result["weight_total"] == 7.0
    assert result["score"] == pytest.approx(f4(2, 3, 1) * 1 / 7)


def test_distance_is_inclusive():
    assert match_points([[0, 0, 0]], [[0, 0, 75.0]], 75.0) == (1, 0, 0)
    assert match_points([[0, 0, 0]], [[0, 0, 75.001]], 75.0) == (0, 1, 1)


def test_voxel_size_scales_points():
    ref = {"TS_1": {"ribosome": np.array(RIBOSOME_REF) / 10.0}}
    pred = {"TS_1": {"ribosome": np.array(RIBOSOME_PRED) / 10.0}}
    in_voxels = picking_score(ref, pred, voxel_size=10.0)
    assert in_voxels["per_type"]["ribosome"]["tp"] == 2
    aniso = picking_score(ref, pred, voxel_size=(10.0, 10.0, 10.0))
    assert aniso["score"] == pytest.approx(in_voxels["score"])


def test_counts_sum_over_experiments_before_fbeta():
    ref = {
        "A": {"thyroglobulin": [[0, 0, 0]], "apo-ferritin": [[0, 300, 0], [500, 0, 0]]},
        "B": {"thyroglobulin": [[0, 0, 0], [400, 0, 0]]},
    }
    pred = {
        "A": {"thyroglobulin": [[0, 0, 10]], "apo-ferritin": [[0, 300, 29]]},
        "B": {"thyroglobulin": [[400, 0, 64], [900, 0, 0]], "ribosome": [[0, 0, 0]]},
        "C": {"thyroglobulin": [[0, 0, 0]] * 5},  # not in the reference: dropped
    }
    result = picking_score(ref, pred)
    thy, apo = result["per_type"]["thyroglobulin"], result["per_type"]["apo-ferritin"]
    assert (thy["tp"], thy["fp"], thy["fn"]) == (2, 1, 1)  # 65 A reach: 64 found
    assert (apo["tp"], apo["fp"], apo["fn"]) == (1, 0, 1)  # 30 A reach: 29 found
    assert set(result["per_type"]) == {"apo-ferritin", "thyroglobulin"}  # ribosome not scored
    expected = (2 * f4(2, 1, 1) + 1 * f4(1, 0, 1)) / 7
    assert result["score"] == pytest.approx(expected)


def test_beta_amylase_counts_for_nothing_and_perfect_is_one():
    pts = {name: [[i * 1000.0, 0, 0]] for i, name in enumerate(CZII_PARTICLES)}
    perfect = picking_score({"A": pts}, {"A": pts})
    assert perfect["score"] == pytest.approx(1.0)
    no_amylase = {k: v for k, v in pts.items() if k != "beta-amylase"}
    assert picking_score({"A": pts}, {"A": no_amylase})["score"] == pytest.approx(1.0)
    assert perfect["per_type"]["beta-amylase"]["weight"] == 0.0


def test_one_prediction_near_two_particles():
    ref = [[0, 0, 0], [0, 0, 60]]
    cand = [[0, 0, 30]]
    assert match_points(ref, cand, 30.0) == (2, -1, 0)  # the reference's rule, kept as is
    assert match_points(ref, cand, 30.0, matching="one_to_one") == (1, 0, 1)


def test_empty_inputs():
    assert match_points(np.zeros((0, 3)), [[1, 2, 3]], 5.0) == (0, 1, 0)
    assert match_points([[1, 2, 3]], [], 5.0) == (0, 0, 1)
    result = picking_score({"A": {"ribosome": RIBOSOME_REF}}, {})
    assert result["per_type"]["ribosome"]["fn"] == 3 and result["score"] == 0.0


def test_errors():
    with pytest.raises(ValueError, match="unknown particle types"):
        picking_score({"A": {"ribosome": RIBOSOME_REF}}, {"A": {"proteasome": [[0, 0, 0]]}})
    with pytest.raises(ValueError, match="duplicate"):
        picking_score({"A": {"ribosome": [[0, 0, 0]], "thyroglobulin": [[0, 0, 0]]}}, {})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        picking_score({"A": {"ribosome": [[0, 0]]}}, {})


def test_points_by_type_reads_the_shard_layout():
    points = np.array([[1, 2, 3, 0], [4, 5, 6, 1], [7, 8, 9, 1]], dtype=np.float32)
    split = points_by_type(points, ["apo-ferritin", "ribosome"])
    np.testing.assert_array_equal(split["ribosome"], [[4, 5, 6], [7, 8, 9]])
    assert split["apo-ferritin"].shape == (1, 3)
    assert points_by_type(np.zeros((0, 4)), ["a"])["a"].shape == (0, 3)


def test_fbeta_from_counts_formula():
    assert fbeta_from_counts(2, 3, 1, 4) == pytest.approx(f4(2, 3, 1))
    assert fbeta_from_counts(0, 3, 1, 4) == 0.0


points = st.lists(st.tuples(*[st.integers(0, 20)] * 3), min_size=0, max_size=12, unique=True).map(
    lambda p: np.array(p, dtype=float).reshape(-1, 3)
)


@settings(max_examples=60, deadline=None)
@given(ref=points, cand=points, r=st.floats(0.5, 6.0))
def test_matching_against_brute_force(ref: np.ndarray, cand: np.ndarray, r: float):
    d = np.linalg.norm(ref[:, None] - cand[None], axis=-1) if len(ref) and len(cand) else None
    found = 0 if d is None else int((d <= r).any(axis=1).sum())
    assert match_points(ref, cand, r) == (found, len(cand) - found, len(ref) - found)
    best = 0
    if d is not None:
        rows, cols = linear_sum_assignment(-(d <= r).astype(float))
        best = int((d[rows, cols] <= r).sum())
    assert match_points(ref, cand, r, matching="one_to_one") == (
        best,
        len(cand) - best,
        len(ref) - best,
    )
