"""classification_report against direct scikit-learn calls on the same arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from streamvol.errors import ShapeMismatch
from streamvol.metrics import classification_report, specificity_per_class


def binary_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    return y, s


def multiclass_data(n: int = 300, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def padding_weights(n: int, seed: int, *, binary_only: bool) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    w = (rng.uniform(size=n) > 0.2).astype(float)
    return w if binary_only else w * rng.uniform(0.5, 2.0, n)


def expected_binary(y, s, w, thr=0.5, beta=2.0) -> dict:
    p = (s >= thr).astype(int)
    kw = {"sample_weight": w, "zero_division": 0}
    return {
        "accuracy": skm.accuracy_score(y, p, sample_weight=w),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p, sample_weight=w),
        "precision": skm.precision_score(y, p, **kw),
        "recall": skm.recall_score(y, p, **kw),
        "sensitivity": skm.recall_score(y, p, **kw),
        "f1": skm.f1_score(y, p, **kw),
        "fbeta": skm.fbeta_score(y, p, beta=beta, **kw),
        "roc_auc": skm.roc_auc_score(y, s, sample_weight=w),
        "average_precision": skm.average_precision_score(y, s, sample_weight=w),
        "confusion_matrix": skm.confusion_matrix(y, p, sample_weight=w),
        "confusion_matrix_normalized": skm.confusion_matrix(
            y, p, sample_weight=w, normalize="true"
        ),
    }


def expected_multiclass(y, s, w, beta=2.0) -> dict:
    p = s.argmax(axis=1)
    c = s.shape[1]
    kw = {"sample_weight": w, "zero_division": 0, "average": "macro"}
    return {
        "accuracy": skm.accuracy_score(y, p, sample_weight=w),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p, sample_weight=w),
        "precision": skm.precision_score(y, p, **kw),
        "recall": skm.recall_score(y, p, **kw),
        "f1": skm.f1_score(y, p, **kw),
        "fbeta": skm.fbeta_score(y, p, beta=beta, **kw),
        "roc_auc": skm.roc_auc_score(y, s, multi_class="ovr", average="macro", sample_weight=w),
        "average_precision": skm.average_precision_score(
            label_binarize(y, classes=range(c)), s, average="macro", sample_weight=w
        ),
        "top2_accuracy": skm.top_k_accuracy_score(y, s, k=2, sample_weight=w),
        "confusion_matrix": skm.confusion_matrix(y, p, sample_weight=w),
        "confusion_matrix_normalized": skm.confusion_matrix(
            y, p, sample_weight=w, normalize="true"
        ),
    }


def assert_matches(report: dict, expected: dict) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(report[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


class TestBinary:
    def test_equals_sklearn(self):
        y, s = binary_data()
        report = classification_report(y, s, class_names=["neg", "pos"])
        assert report["task"] == "binary" and report["threshold"] == 0.5
        assert_matches(report, expected_binary(y, s, None))
        json.dumps(report)  # a run's report.json

    def test_threshold_and_beta(self):
        y, s = binary_data(seed=1)
        report = classification_report(y, s, class_names=["a", "b"], threshold=0.62, beta=0.5)
        assert_matches(report, expected_binary(y, s, None, thr=0.62, beta=0.5))

    def test_padding_weights_drop_rows(self):
        y, s = binary_data(seed=2)
        w = padding_weights(len(y), 2, binary_only=True)
        keep = w > 0
        report = classification_report(y, s, class_names=["a", "b"], weights=w)
        assert report["n_samples"] == keep.sum() and report["n_padding"] == (~keep).sum()
        assert_matches(report, expected_binary(y[keep], s[keep], None))

    def test_padding_rows_never_count(self):
        y, s = binary_data(seed=3)
        w = padding_weights(len(y), 3, binary_only=True)
        y2, s2 = y.copy(), s.copy()
        y2[w == 0] = 1 - y2[w == 0]  # garbage in the padding rows
        s2[w == 0] = 1 - s2[w == 0]
        a = classification_report(y, s, class_names=["a", "b"], weights=w)
        b = classification_report(y2, s2, class_names=["a", "b"], weights=w)
        assert a == b

    def test_sample_weights(self):
        y, s = binary_data(seed=4)
        w = padding_weights(len(y), 4, binary_only=False)
        keep = w > 0
        report = classification_report(y, s, class_names=["a", "b"], weights=w)
        assert_matches(report, expected_binary(y[keep], s[keep], w[keep]))

    def test_specificity_from_confusion_matrix(self):
        y, s = binary_data(seed=5)
        report = classification_report(y, s, class_names=["a", "b"])
        (tn, fp), (_fn, _tp) = report["confusion_matrix"]
        assert report["specificity"] == pytest.approx(tn / (tn + fp))
        assert report["per_class"]["b"]["specificity"] == pytest.approx(tn / (tn + fp))
        assert report["per_class"]["a"]["recall"] == pytest.approx(tn / (tn + fp))

    def test_two_column_scores_and_tensors(self):
        y, s = binary_data(seed=6)
        two = np.stack([1 - s, s], axis=1)
        a = classification_report(y, s, class_names=["a", "b"])
        b = classification_report(torch.from_numpy(y), torch.from_numpy(two), class_names="ab")
        assert a == b

    def test_single_class_is_reported_not_raised(self):
        y = np.zeros(10, dtype=int)
        s = np.linspace(0, 1, 10)
        report = classification_report(y, s, class_names=["a", "b"])
        assert report["roc_auc"] is None and report["average_precision"] is None
        assert report["specificity"] == pytest.approx(0.5)
        assert any("roc_auc" in n for n in report["notes"])
        only_pos = classification_report(np.ones(10, int), s, class_names=["a", "b"])
        assert only_pos["specificity"] is None and only_pos["roc_auc"] is None
        assert only_pos["average_precision"] == pytest.approx(1.0)


class TestMulticlass:
    names = ("w", "x", "y", "z")

    def test_equals_sklearn(self):
        y, s = multiclass_data()
        report = classification_report(y, s, class_names=self.names)
        assert report["task"] == "multiclass" and report["threshold"] is None
        assert_matches(report, expected_multiclass(y, s, None))
        json.dumps(report)

    def test_padding_and_sample_weights(self):
        y, s = multiclass_data(seed=1)
        for binary_only in (True, False):
            w = padding_weights(len(y), 1, binary_only=binary_only)
            keep = w > 0
            report = classification_report(y, s, class_names=self.names, weights=w)
            wk = None if binary_only else w[keep]
            assert_matches(report, expected_multiclass(y[keep], s[keep], wk))

    def test_per_class_equals_sklearn(self):
        y, s = multiclass_data(seed=2)
        report = classification_report(y, s, class_names=self.names)
        p = s.argmax(axis=1)
        prec, rec, f1, support = skm.precision_recall_fscore_support(y, p, zero_division=0)
        for k, name in enumerate(self.names):
            row = report["per_class"][name]
            assert row["precision"] == pytest.approx(prec[k])
            assert row["recall"] == pytest.approx(rec[k])
            assert row["f1"] == pytest.approx(f1[k])
            assert row["support"] == support[k]
            assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y == k, s[:, k]))

    def test_specificity_one_vs_rest(self):
        y, s = multiclass_data(seed=3)
        report = classification_report(y, s, class_names=self.names)
        cm = np.array(report["confusion_matrix"])
        manual = []
        for k in range(4):
            tp = cm[k, k]
            fp = cm[:, k].sum() - tp
            fn = cm[k, :].sum() - tp
            tn = cm.sum() - tp - fp - fn
            manual.append(tn / (tn + fp))
            assert report["per_class"][self.names[k]]["specificity"] == pytest.approx(manual[-1])
        assert report["specificity"] == pytest.approx(np.mean(manual))
        assert specificity_per_class(cm) == pytest.approx(manual)

    def test_top2_hand_made(self):
        y = np.array([0, 1, 2, 2])
        s = np.array(
            [
                [0.6, 0.3, 0.1],  # top-1 right
                [0.5, 0.4, 0.1],  # right class second
                [0.5, 0.4, 0.1],  # right class third
                [0.1, 0.2, 0.7],  # top-1 right
            ]
        )
        report = classification_report(y, s, class_names=["a", "b", "c"])
        assert report["accuracy"] == pytest.approx(0.5)
        assert report["top2_accuracy"] == pytest.approx(0.75)

    def test_missing_class_gives_none_auc(self):
        y, s = multiclass_data(seed=4)
        keep = y != 2
        y, s = y[keep], s[keep]
        report = classification_report(y, s, class_names=self.names)
        assert report["roc_auc"] is None and report["average_precision"] is None
        assert report["per_class"]["y"]["roc_auc"] is None
        assert report["per_class"]["y"]["support"] == 0
        assert report["per_class"]["x"]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y == 1, s[:, 1])
        )
        assert any("roc_auc" in n and "'y'" in n for n in report["notes"])
        assert any("absent" in n for n in report["notes"])
        p = s.argmax(axis=1)
        assert report["f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))

    def test_single_class(self):
        y = np.full(6, 1)
        _, s = multiclass_data(n=6, c=3)
        report = classification_report(y, s, class_names=["a", "b", "c"])
        assert report["roc_auc"] is None
        assert report["per_class"]["b"]["specificity"] is None
        json.dumps(report)


class TestErrors:
    def test_length_mismatch(self):
        with pytest.raises(ShapeMismatch, match="expected 5 rows"):
            classification_report(np.zeros(5, int), np.zeros(4), class_names="ab")
        with pytest.raises(ShapeMismatch, match="weights"):
            classification_report(np.zeros(5, int), np.zeros(5), class_names="ab", weights=[1])

    def test_bad_values(self):
        with pytest.raises(ValueError, match=r"class ids in \[0, 2\), got 2"):
            classification_report(np.array([0, 2]), np.zeros(2), class_names="ab")
        with pytest.raises(ValueError, match="finite"):
            classification_report(np.array([0, 1]), np.array([0.1, np.nan]), class_names="ab")
        with pytest.raises(ValueError, match=r"expected shape \(N, 3\)"):
            classification_report(np.array([0, 1]), np.zeros((2, 4)), class_names="abc")
        with pytest.raises(ValueError, match="only binary"):
            classification_report([0, 1], np.eye(3)[:2], class_names="abc", threshold=0.3)
        with pytest.raises(ValueError, match="weight 0"):
            classification_report([0, 1], [0.2, 0.8], class_names="ab", weights=[0, 0])


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 40),
    c=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_metrics_in_unit_interval_and_permutation_invariant(n: int, c: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    s = p[:, 1] if c == 2 else p
    w = rng.integers(0, 3, n).astype(float)
    w[0] = 1.0
    names = [f"c{k}" for k in range(c)]
    report = classification_report(y, s, class_names=names, weights=w)
    scalars = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1"]
    scalars += ["fbeta", "roc_auc", "average_precision"]
    for key in scalars:
        assert report[key] is None or 0.0 <= report[key] <= 1.0 + 1e-12, key
    order = rng.permutation(n)
    permuted = classification_report(y[order], s[order], class_names=names, weights=w[order])
    for key in scalars:
        if report[key] is None:
            assert permuted[key] is None
        else:
            assert permuted[key] == pytest.approx(report[key], abs=1e-12), key
    np.testing.assert_allclose(permuted["confusion_matrix"], report["confusion_matrix"])
