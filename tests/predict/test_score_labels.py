"""``score`` of label volumes against masks: block-wise counts equal scikit-learn's confusion
matrix, and a mask that does not fit the prediction is refused, naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix

from streamvol.errors import BadLabels, ShapeMismatch
from streamvol.predict import _score_labels as module
from streamvol.predict import score_labels, volume_counts, write_ome_zarr

NAMES = ["background", "cell", "nucleus"]


def _prediction(folder, labels: dict[str, np.ndarray], names=NAMES):
    for name, volume in labels.items():
        (folder / name).mkdir(parents=True)
        write_ome_zarr(folder / name / "labels.ome.zarr", volume.astype(np.uint8), None)
    summary = {"task": "segmentation", "class_names": names, "experiments": {n: {} for n in labels}}
    (folder / "predict.json").write_text(json.dumps(summary))
    return folder


def _masks(folder, masks: dict[str, np.ndarray]):
    folder.mkdir(parents=True)
    for name, mask in masks.items():
        np.save(folder / f"{name}.npy", np.zeros(mask.shape, np.float32))
        np.save(folder / f"{name}_mask.npy", mask)
    return folder


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)),
    block=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_block_wise_counts_are_scikit_learn_s_confusion_matrix(
    tmp_path_factory, shape, block, seed
):
    rng = np.random.default_rng(seed)
    pred, truth = rng.integers(0, 3, shape), rng.integers(0, 3, shape).astype(np.uint8)
    root = tmp_path_factory.mktemp("case")
    _prediction(root / "pred", {"v": pred})
    _masks(root / "ref", {"v": truth})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_BLOCK_VOXELS", block)  # blocks of one slice or more
        calls = []
        counts = volume_counts(
            root / "pred" / "v" / "labels.ome.zarr",
            root / "ref" / "v_mask.npy",
            NAMES,
            progress=lambda done, total: calls.append((done, total)),
        )
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and done[-1] == shape[0]  # each block once, to the end
    assert {t for _, t in calls} == {shape[0]}
    expected = confusion_matrix(truth.ravel(), pred.ravel(), labels=[0, 1, 2])
    np.testing.assert_array_equal(counts, expected)


def test_two_volumes_scored_each_and_together(tmp_path):
    rng = np.random.default_rng(0)
    pred = {"a": rng.integers(0, 3, (4, 8, 8)), "b": np.zeros((2, 8, 8), int)}
    truth = {"a": pred["a"].astype(np.uint8), "b": np.ones((2, 8, 8), np.uint8)}
    seen = {}
    report = score_labels(
        _prediction(tmp_path / "pred", pred),
        _masks(tmp_path / "ref", truth),
        out=tmp_path / "s.json",
        progress=lambda name, done, total: seen.__setitem__(name, (done, total)),
    )
    assert seen == {"a": (4, 4), "b": (2, 2)}
    assert report["experiments"]["a"]["dice"] == {n: 1.0 for n in NAMES}
    assert report["experiments"]["b"]["dice"] == {"background": 0.0, "cell": 0.0, "nucleus": 1.0}
    cells = (truth["a"] == 1).sum()  # all found in a; b's 128 cell voxels all missed
    assert report["overall"]["dice"]["cell"] == pytest.approx(2 * cells / (2 * cells + 128))
    assert report["overall"]["voxels"] == 4 * 64 + 2 * 64
    assert json.loads((tmp_path / "s.json").read_text()) == report
    assert report["plot"] == str(tmp_path / "s.png")  # Dice bars beside the JSON
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    only_a = score_labels(tmp_path / "pred", _masks(tmp_path / "ref-a", {"a": truth["a"]}))
    assert list(only_a["experiments"]) == ["a"] and only_a["unscored"] == ["b"]
    assert only_a["unpredicted"] == [] and report["unpredicted"] == []
    a_against_all = score_labels(
        _prediction(tmp_path / "pred-a", {"a": pred["a"]}), tmp_path / "ref"
    )
    assert list(a_against_all["experiments"]) == ["a"] and a_against_all["unpredicted"] == ["b"]
    assert a_against_all["overall"] == only_a["overall"]  # b's mask is left out, not all missed
    assert only_a["overall"]["dice"] == {n: 1.0 for n in NAMES}


def test_masks_that_do_not_fit_are_refused_naming_them(tmp_path):
    pred = _prediction(tmp_path / "pred", {"a": np.zeros((4, 8, 8), int)})
    wrong_value = np.zeros((4, 8, 8), np.uint8)
    wrong_value[2, 1, 1] = 7
    with pytest.raises(
        BadLabels, match=r"a_mask\.npy: value 7 in slice z=2; expected class ids 0 to 2"
    ):
        score_labels(pred, _masks(tmp_path / "r1", {"a": wrong_value}))
    with pytest.raises(
        ShapeMismatch,
        match=r"labels\.ome\.zarr: shape \(4, 8, 8\), but its mask .*a_mask\.npy has \(4, 8, 6\)",
    ):
        score_labels(pred, _masks(tmp_path / "r2", {"a": np.zeros((4, 8, 6), np.uint8)}))
    with pytest.raises(
        BadLabels, match=r"no mask for any experiment of .*pred \(a\); masks found for: other"
    ):
        score_labels(pred, _masks(tmp_path / "r3", {"other": np.zeros((4, 8, 8), np.uint8)}))


def test_the_score_table_keeps_long_class_names_over_their_columns():
    from streamvol.predict._score_labels import format_label_score

    names = ["background", "beta-galactosidase", "ribosome"]
    row = {"dice": dict.fromkeys(names, 0.5), "voxels": 1000}
    report = {"class_names": names, "experiments": {"TS_0": row}, "overall": row}
    report["overall"] = {**row, "mean_dice": 0.5, "mean_iou": 0.3}
    head, *rows = format_label_score(report).splitlines()[1:-1]
    ends = [
        i for i in range(1, len(head) + 1) if head[i - 1] != " " and head[i : i + 1] in ("", " ")
    ]
    for line in rows:
        assert len(line) == len(head)
        assert all(line[i - 1] != " " for i in ends[1:])  # right-aligned under their names
