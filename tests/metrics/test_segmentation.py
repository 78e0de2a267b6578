"""segmentation_report against a direct numpy computation and hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.errors import ShapeMismatch
from streamvol.metrics import segmentation_report


def direct(p: np.ndarray, t: np.ndarray, c: int, ignore: int | None = None):
    """Per-sample (N, C) Dice and IoU, written out from the definitions."""
    dice = np.ones((len(p), c))
    iou = np.ones((len(p), c))
    for i in range(len(p)):
        valid = np.ones(t[i].shape, bool) if ignore is None else t[i] != ignore
        for k in range(c):
            a = (p[i] == k) & valid
            b = (t[i] == k) & valid
            inter, total = (a & b).sum(), a.sum() + b.sum()
            if total:
                dice[i, k] = 2 * inter / total
                iou[i, k] = inter / (a | b).sum()
    return dice, iou


def volumes(n: int = 3, c: int = 4, shape=(6, 7, 8), seed: int = 0):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, (n, *shape))
    p = np.where(rng.uniform(size=t.shape) < 0.7, t, rng.integers(0, c, t.shape))
    return p, t


def test_equals_direct_computation():
    p, t = volumes()
    report = segmentation_report(p, t, num_classes=4, class_names=["bg", "a", "b", "c"])
    dice, iou = direct(p, t, 4)
    np.testing.assert_allclose(report["per_sample_dice"], dice)
    np.testing.assert_allclose(report["per_sample_iou"], iou)
    np.testing.assert_allclose(list(report["dice"].values()), dice.mean(axis=0))
    np.testing.assert_allclose(list(report["iou"].values()), iou.mean(axis=0))
    assert report["mean_dice"] == pytest.approx(dice.mean(axis=0)[1:].mean())
    assert report["mean_iou"] == pytest.approx(iou.mean(axis=0)[1:].mean())
    assert list(report["dice"]) == ["bg", "a", "b", "c"]


def test_hand_made_case():
    t = np.zeros((1, 2, 5), int)
    p = np.zeros((1, 2, 5), int)
    t[0, 0, :4] = 1  # 4 voxels of class 1
    p[0, 0, 1:4] = 1  # 3 of them found ...
    p[0, 1, :3] = 1  # ... plus 3 wrong ones: |pred| = 6
    report = segmentation_report(p, t, num_classes=2)
    assert report["dice"]["1"] == pytest.approx(2 * 3 / (6 + 4))
    assert report["iou"]["1"] == pytest.approx(3 / 7)
    assert report["dice"]["0"] == pytest.approx(2 * 3 / (4 + 6))  # bg: 6 true, 4 predicted, 3 both
    assert report["mean_dice"] == report["dice"]["1"]


def test_identical_disjoint_and_empty():
    t = np.zeros((4, 4, 4), int)
    t[:2] = 1
    same = segmentation_report(t, t, num_classes=3)
    assert same["dice"] == {"0": 1.0, "1": 1.0, "2": 1.0}  # class 2 in neither: 1.0
    swapped = segmentation_report(1 - t, t, num_classes=2)
    assert swapped["dice"] == {"0": 0.0, "1": 0.0} and swapped["iou"]["1"] == 0.0


def test_ignore_index():
    p, t = volumes(seed=1)
    t = t.copy()
    t[:, :2] = 255
    report = segmentation_report(p, t, num_classes=4, ignore_index=255)
    dice, _ = direct(p, t, 4, ignore=255)
    np.testing.assert_allclose(report["per_sample_dice"], dice)
    p2 = p.copy()
    p2[:, :2] = 3  # predictions under ignored voxels do not count
    again = segmentation_report(p2, t, num_classes=4, ignore_index=255)
    assert again["dice"] == report["dice"]


def test_weights_drop_padding_and_weigh_samples():
    p, t = volumes(n=4, seed=2)
    w = np.array([1.0, 0.0, 2.0, 0.5])
    report = segmentation_report(p, t, num_classes=4, weights=w)
    dice, _ = direct(p, t, 4)
    keep = w > 0
    expected = np.average(dice[keep], axis=0, weights=w[keep])
    np.testing.assert_allclose(list(report["dice"].values()), expected)
    assert report["n_samples"] == 3 and report["n_padding"] == 1
    p2 = p.copy()
    p2[1] = 0
    assert segmentation_report(p2, t, num_classes=4, weights=w)["dice"] == report["dice"]


def test_global_reduction_sums_voxels():
    p, t = volumes(n=3, seed=3)
    report = segmentation_report(p, t, num_classes=4, reduction="global")
    dice, iou = direct(p.reshape(1, -1, 1, 1), t.reshape(1, -1, 1, 1), 4)
    np.testing.assert_allclose(list(report["dice"].values()), dice[0])
    np.testing.assert_allclose(list(report["iou"].values()), iou[0])


def test_shapes_and_tensors():
    p, t = volumes(n=1, seed=4)
    single = segmentation_report(p[0], t[0], num_classes=4)
    channel = segmentation_report(torch.from_numpy(p[:, None]), t[:, None], num_classes=4)
    assert single["dice"] == channel["dice"] and single["n_samples"] == 1
    logits = np.eye(4)[p].transpose(0, 4, 1, 2, 3) + 0.1  # (N, C, D, H, W) scores
    assert segmentation_report(logits, t, num_classes=4)["dice"] == single["dice"]


def test_errors():
    p, t = volumes(n=2)
    with pytest.raises(ShapeMismatch):
        segmentation_report(p[:, :-1], t, num_classes=4)
    with pytest.raises(ValueError, match="ignore_index"):
        segmentation_report(p, t, num_classes=4, ignore_index=0)
    with pytest.raises(ValueError, match=r"\[0, 3\), got 3"):
        segmentation_report(p, t, num_classes=3)
    with pytest.raises(ValueError, match="integer"):
        segmentation_report(p + 0.5, t, num_classes=4)
    with pytest.raises(ValueError, match=r"\(N, D, H, W\)"):
        segmentation_report(p[0, 0], t[0, 0], num_classes=4)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_bounds_iou_identity_and_sample_order(n: int, c: int, seed: int):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, (n, 3, 4, 5))
    p = rng.integers(0, c, (n, 3, 4, 5))
    report = segmentation_report(p, t, num_classes=c)
    dice = np.array(report["per_sample_dice"])
    iou = np.array(report["per_sample_iou"])
    assert np.all((dice >= 0) & (dice <= 1))
    np.testing.assert_allclose(iou, dice / (2 - dice))  # IoU = D / (2 - D), exactly
    order = rng.permutation(n)
    permuted = segmentation_report(p[order], t[order], num_classes=c)
    np.testing.assert_allclose(list(permuted["dice"].values()), list(report["dice"].values()))


def test_voxel_sensitivity_specificity_and_auc_equal_scikit_learn_with_weights_and_padding():
    """Binary masks: per-voxel sensitivity and specificity are recall of each outcome, ROC AUC
    is scikit-learn's, each voxel weighted by its sample's weight; padding (weight 0) left out."""
    from sklearn.metrics import recall_score, roc_auc_score

    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, (4, 5, 6, 7))
    prob = np.clip(0.35 * t + rng.uniform(0, 0.65, t.shape), 0, 1).astype(np.float32)
    p = (prob > 0.5).astype(np.int64)
    w = np.array([1.0, 2.0, 0.5, 0.0])  # the last sample is padding
    report = segmentation_report(p, t, num_classes=2, weights=w, scores=prob)
    keep = w > 0
    vw = np.repeat(w[keep], 5 * 6 * 7)
    yt, yp, ys = t[keep].ravel(), p[keep].ravel(), prob[keep].ravel()
    assert report["sensitivity"] == pytest.approx(recall_score(yt, yp, sample_weight=vw))
    assert report["specificity"] == pytest.approx(
        recall_score(yt, yp, pos_label=0, sample_weight=vw)
    )
    assert report["roc_auc"] == pytest.approx(roc_auc_score(yt, ys, sample_weight=vw))
    voxel = report["per_class_voxel"]["1"]
    assert voxel["sensitivity"] == report["sensitivity"] and voxel["roc_auc"] == report["roc_auc"]


def test_multiclass_voxel_metrics_are_the_foreground_mean_and_undefined_is_none():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    t = rng.integers(0, 3, (2, 4, 4, 4))
    probs = rng.dirichlet(np.ones(3), size=t.shape).transpose(0, 4, 1, 2, 3)
    probs[:, 1] += 0.5 * (t == 1)
    probs /= probs.sum(1, keepdims=True)
    report = segmentation_report(probs.argmax(1), t, num_classes=3, scores=probs)
    aucs = [roc_auc_score((t == k).ravel(), probs[:, k].ravel()) for k in (1, 2)]
    assert report["roc_auc"] == pytest.approx(np.mean(aucs))
    empty = segmentation_report(np.zeros((1, 3, 3, 3), int), np.zeros((1, 3, 3, 3), int),
                                num_classes=2)  # fmt: skip
    assert empty["sensitivity"] is None and empty["roc_auc"] is None
    assert empty["specificity"] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 5),
    classes=st.sampled_from([2, 3]),
    limit=st.integers(1, 400),
    ignore=st.booleans(),
)
def test_voxel_auc_on_a_strided_subset_equals_scikit_learn_on_the_same_voxels(
    seed, n, classes, limit, ignore
):
    """Above ``MAX_AUC_VOXELS`` the AUC takes every step-th scored voxel (ignored ones left out,
    padding samples too), each weighted by its sample: scikit-learn on exactly those voxels."""
    from sklearn.metrics import roc_auc_score

    from streamvol.metrics import segmentation as seg

    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, (n, 3, 4, 5))
    if ignore:
        t[rng.random(t.shape) < 0.3] = 255
    probs = rng.dirichlet(np.ones(classes), size=t.shape).transpose(0, 4, 1, 2, 3)
    probs = probs.astype(np.float16)
    w = rng.choice([0.0, 0.5, 1.0, 2.0], n)
    w[0] = 1.0  # one sample at least is scored
    scores = probs[:, 1] if classes == 2 else probs
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seg, "MAX_AUC_VOXELS", limit)
        report = segmentation_report(
            probs.argmax(1), t, num_classes=classes, weights=w, scores=scores,
            ignore_index=255 if ignore else None,
        )  # fmt: skip
    keep = w > 0
    flat_t = t[keep].reshape(-1)
    flat_p = np.moveaxis(probs[keep], 1, -1).reshape(-1, classes).astype(np.float32)
    flat_w = np.repeat(w[keep], 3 * 4 * 5)
    index = np.flatnonzero(flat_t != 255)
    index = index[:: max(1, -(-len(index) // limit))]
    expected = []
    for k in range(1, classes):
        positive = flat_t[index] == k
        if positive.all() or not positive.any():
            continue
        expected.append(roc_auc_score(positive, flat_p[index, k], sample_weight=flat_w[index]))
    if expected:
        assert report["roc_auc"] == pytest.approx(np.mean(expected), rel=1e-3)
    else:
        assert report["roc_auc"] is None


def test_voxel_auc_does_not_copy_the_probabilities_of_the_whole_set(monkeypatch):
    """The per-voxel AUC gathers only the voxels it scores: a set of 2 M voxels scored on
    20,000 of them allocates under a byte per voxel beyond its inputs (a copy of the
    probabilities alone would take 8)."""
    import tracemalloc

    from streamvol.metrics import segmentation as seg

    monkeypatch.setattr(seg, "MAX_AUC_VOXELS", 20_000)
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, (80, 24, 32, 32), dtype=np.uint8)
    prob = (0.4 * t + 0.6 * rng.random(t.shape, dtype=np.float32)).astype(np.float16)
    p = (prob > 0.5).astype(np.uint8)
    tracemalloc.start()
    try:
        report = segmentation_report(p, t, num_classes=2, scores=prob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report["roc_auc"] > 0.9
    assert peak < t.size
