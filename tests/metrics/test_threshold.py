"""sweep_threshold: known optima, tie rule, and every table row against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from streamvol.metrics import classification_report, sweep_threshold


def test_separable_case_picks_the_gap_midpoint():
    neg = [0.05, 0.1, 0.2, 0.3]
    pos = [0.35, 0.4, 0.6, 0.9]
    y = np.array([0] * 4 + [1] * 4)
    s = np.array(neg + pos)
    best, table = sweep_threshold(y, s)
    assert best == pytest.approx(0.325)
    i = int(np.argmin(np.abs(table["threshold"] - best)))
    assert table["value"][i] == pytest.approx(1.0)
    at_default = classification_report(y, s, class_names="ab")["balanced_accuracy"]
    at_best = classification_report(y, s, class_names="ab", threshold=best)["balanced_accuracy"]
    assert at_default < 1.0 and at_best == 1.0


def test_keeps_half_when_half_is_among_the_best():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.7, 0.8])
    best, _ = sweep_threshold(y, s)
    assert best == 0.5


def test_known_optimum_off_centre():
    # Positives at 0.05 steps from 0.62, negatives below 0.6 except one at 0.7: the best
    # balanced accuracy keeps the stray negative positive and cuts at the 0.6 gap.
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.3, 0.5, 0.58, 0.7, 0.62, 0.67, 0.72, 0.77, 0.82, 0.87])
    best, table = sweep_threshold(y, s)
    assert best == pytest.approx((0.58 + 0.62) / 2)
    assert table["value"].max() == pytest.approx((1.0 + 0.8) / 2)


def test_equal_distances_go_to_the_lower_threshold():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.45, 0.55, 0.9])
    best, table = sweep_threshold(y, s, grid=[0.3, 0.7])
    assert table["value"][0] == table["value"][1]
    assert best == 0.3


@pytest.mark.parametrize("metric", ["balanced_accuracy", "accuracy", "f1", "youden"])
def test_table_equals_sklearn_at_every_threshold(metric):
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=150) < 0.3).astype(int)
    s = np.clip(0.25 * y + rng.uniform(0, 0.75, 150), 0, 1).round(2)  # ties in scores
    w = rng.uniform(0.5, 2.0, 150) * (rng.uniform(size=150) > 0.1)
    keep = w > 0
    best, table = sweep_threshold(y, s, metric=metric, weights=w)
    direct = {
        "balanced_accuracy": skm.balanced_accuracy_score,
        "youden": lambda a, b, **k: 2 * skm.balanced_accuracy_score(a, b, **k) - 1,
        "accuracy": skm.accuracy_score,
        "f1": lambda a, b, **k: skm.f1_score(a, b, zero_division=0, **k),
    }[metric]
    values = [
        direct(y[keep], (s[keep] >= t).astype(int), sample_weight=w[keep])
        for t in table["threshold"]
    ]
    np.testing.assert_allclose(table["value"], values, atol=1e-12)
    assert table["value"].max() == pytest.approx(max(values))
    best_values = np.flatnonzero(np.isclose(values, max(values)))
    closest = table["threshold"][best_values][
        np.argmin(np.abs(table["threshold"][best_values] - 0.5))
    ]
    assert best == closest


def test_default_grid_reaches_every_prediction():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    s = rng.uniform(size=60)
    _, table = sweep_threshold(y, s)
    # one threshold per distinct number of predicted positives, 0 to N, plus 0.5
    positives = table["tp"] + table["fp"]
    assert set(positives) == set(range(61))


def test_single_class_is_an_error():
    with pytest.raises(ValueError, match="both classes"):
        sweep_threshold(np.zeros(4, int), np.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="metric"):
        sweep_threshold([0, 1], [0.2, 0.8], metric="auc")
