"""Mask labels: the sharder records their range, and a segmentation run learns instance ids or
several classes only as ``mask_labels`` says (binary or classes), refusing them otherwise
before it writes anything; predict and score follow the run's choice. Validation Dice counts
the voxels of all crops together."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
import torch
import webdataset as wds
from sklearn.metrics import confusion_matrix

from streamvol.errors import BadInput
from streamvol.predict import score_labels, write_ome_zarr
from streamvol.shard import parse_config, shard
from streamvol.train import TrainConfig, Trainer
from streamvol.train.setup import segmentation_task

# one stack cut into slabs for its two splits, on purpose: the sharder says so each time
pytestmark = pytest.mark.filterwarnings("ignore:only one source:streamvol.errors.SplitWarning")

FAST = {"batch_size": 4, "workers": 0, "augment": "flips", "warmup": 0}
UNET = {"model": "unet3d", "model_options": {"depth": 1, "base_width": 2}}


def _instances(folder, shape=(16, 32, 32), n=5, seed=0, name="cells"):
    """A volume and its instance mask: ``n`` balls labelled 1..n, the last one as label 7."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 5, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint16)
    grid = np.indices(shape)
    for k in range(n):
        centre = [rng.integers(4, s - 4) for s in shape]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 9
        mask[ball] = 7 if k == n - 1 else k + 1
        image[ball] += 40
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}.tif", image)
    tifffile.imwrite(folder / f"{name}_mask.tif", mask)
    return folder


def _stored_masks(shards, split):
    paths = sorted(str(p) for p in shards.glob(f"{split}-*.tar"))
    return {
        s["__key__"]: np.load(io.BytesIO(s["mask.npy"]))
        for s in wds.WebDataset(paths, shardshuffle=False, empty_check=False)
    }


@pytest.fixture(scope="module")
def instance_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("instances")
    data = _instances(root / "data")
    shards = root / "shards"
    shard(parse_config([data], plan="grid", crop="8,16,16", context=0, split="0.5,0.5"), shards)
    return data, shards


@pytest.mark.parametrize("plan", ["grid", "regions"])
def test_the_manifest_records_the_range_of_the_stored_mask_labels(tmp_path, plan):
    data = _instances(tmp_path / "data")
    _instances(data, seed=1, name="more")  # regions group by source: two sources, two splits
    shards = tmp_path / "shards"
    per = {"crops_per_region": 2} if plan == "regions" else {}
    shard(parse_config([data], plan=plan, crop="8,16,16", split="0.5,0.5", **per), shards)
    stored = [m for split in ("train", "val") for m in _stored_masks(shards, split).values()]
    manifest = json.loads((shards / "manifest.json").read_text())
    expected = [min(int(m.min()) for m in stored), max(int(m.max()) for m in stored)]
    assert manifest["mask_range"] == expected
    assert expected[1] > 1  # the instance ids reached the shards


def test_a_set_without_masks_records_no_mask_range(blob_shards):
    assert "mask_range" not in json.loads((blob_shards / "manifest.json").read_text())


def test_instance_ids_are_refused_unless_the_run_says_what_they_are(instance_set, tmp_path):
    _, shards = instance_set
    high = json.loads((shards / "manifest.json").read_text())["mask_range"][1]
    config = TrainConfig(shards=str(shards), epochs=1, **UNET, **FAST)
    with pytest.raises(BadInput, match=rf"labels 0 to {high}.*--mask-labels binary.*classes"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder was claimed


def test_binary_runs_learn_every_label_above_0_as_foreground(instance_set, tmp_path):
    _, shards = instance_set
    config = TrainConfig(shards=str(shards), epochs=1, mask_labels="binary", **UNET, **FAST)
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.task.class_names == ("background", "foreground")
    out = trainer.predict("val")
    stored = _stored_masks(shards, "val")
    expected = np.stack([stored[k] > 0 for k in out["keys"]])
    np.testing.assert_array_equal(out["targets"], expected)
    report = trainer.fit()
    assert list(report["dice_per_class"]) == ["background", "foreground"]


def test_classes_runs_learn_each_label_as_its_class(instance_set, tmp_path):
    _, shards = instance_set
    high = json.loads((shards / "manifest.json").read_text())["mask_range"][1]
    config = TrainConfig(shards=str(shards), epochs=1, mask_labels="classes", **UNET, **FAST)
    trainer = Trainer(config, tmp_path / "run")
    names = ("background", *(f"label {k}" for k in range(1, high + 1)))
    assert trainer.task.class_names == names
    assert trainer.model(torch.zeros((1, 1, 8, 16, 16))).shape[1] == len(names)
    out = trainer.predict("val")
    stored = _stored_masks(shards, "val")
    np.testing.assert_array_equal(out["targets"], np.stack([stored[k] for k in out["keys"]]))


def test_class_names_too_few_for_the_labels_are_refused(instance_set):
    _, shards = instance_set
    options = {"model_options": {"class_names": ["background", "a", "b"]}}
    config = TrainConfig(shards=str(shards), **options)
    manifest = json.loads((shards / "manifest.json").read_text())
    with pytest.raises(BadInput, match="give 8 class_names"):
        segmentation_task(config, manifest)
    fitting = {**manifest, "mask_range": [0, 2]}
    assert segmentation_task(config, fitting).class_names == ("background", "a", "b")


@pytest.mark.parametrize(
    ("mask_range", "names"),
    [
        ([0, 1], ("background", "foreground")),
        ([0, 0], ("background", "foreground")),
        (None, ("background", "foreground")),  # a set made before the range was recorded
    ],
)
def test_binary_masks_and_older_sets_train_as_before(instance_set, mask_range, names):
    _, shards = instance_set
    manifest = {**json.loads((shards / "manifest.json").read_text()), "mask_range": mask_range}
    task = segmentation_task(TrainConfig(shards=str(shards)), manifest)
    assert (task.class_names, task.binary_mask) == (names, False)


def test_negative_labels_are_refused_in_every_mode(instance_set):
    _, shards = instance_set
    manifest = {**json.loads((shards / "manifest.json").read_text()), "mask_range": [-1, 1]}
    for mode in ("auto", "binary", "classes"):
        with pytest.raises(BadInput, match=r"labels -1 to 1; expected labels >= 0"):
            segmentation_task(TrainConfig(shards=str(shards), mask_labels=mode), manifest)


def test_score_of_a_binary_run_counts_every_label_above_0_as_foreground(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (4, 6, 7)).astype(np.uint16)
    pred = rng.integers(0, 2, truth.shape).astype(np.uint8)
    (tmp_path / "pred" / "v").mkdir(parents=True)
    write_ome_zarr(tmp_path / "pred" / "v" / "labels.ome.zarr", pred, None)
    names = ["background", "foreground"]
    summary = {"task": "segmentation", "class_names": names, "binary_mask": True}
    summary["experiments"] = {"v": {}}
    (tmp_path / "pred" / "predict.json").write_text(json.dumps(summary))
    (tmp_path / "ref").mkdir()
    np.save(tmp_path / "ref" / "v.npy", np.zeros(truth.shape, np.float32))
    np.save(tmp_path / "ref" / "v_mask.npy", truth)
    report = score_labels(tmp_path / "pred", tmp_path / "ref")
    counts = confusion_matrix((truth > 0).ravel(), pred.ravel(), labels=[0, 1])
    dice = 2 * counts[1, 1] / (counts[1].sum() + counts[:, 1].sum())
    assert report["overall"]["dice"]["foreground"] == pytest.approx(dice)
    assert report["overall"]["voxels"] == truth.size


def test_a_rerun_over_shards_of_an_older_version_leaves_the_range_unknown(tmp_path):
    data = _instances(tmp_path / "data")
    shards = tmp_path / "shards"
    config = parse_config([data], plan="grid", crop="8,16,16", context=0, split="0.5,0.5")
    shard(config, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    for records in manifest["splits"].values():
        for record in records:
            del record["mask_range"]  # as records of an older streamvol
    (shards / "manifest.json").write_text(json.dumps(manifest))
    shard(config, shards)  # keeps the finished shards, which it does not read again
    assert json.loads((shards / "manifest.json").read_text())["mask_range"] is None


def test_the_shard_summary_shows_the_labels_and_what_a_run_must_say(instance_set, blob_shards):
    from streamvol.stream.inspect import summary_table

    _, shards = instance_set
    manifest = json.loads((shards / "manifest.json").read_text())
    low, high = manifest["mask_range"]
    table = summary_table(manifest)
    assert table.title.endswith(f"mask labels {low} to {high}")
    assert "--mask-labels binary" in table.caption
    binary = summary_table({**manifest, "mask_range": [0, 1]})
    assert binary.title.endswith("mask labels 0 to 1") and binary.caption is None
    plain = summary_table(json.loads((blob_shards / "manifest.json").read_text()))
    assert "mask labels" not in plain.title


def test_validation_dice_counts_the_voxels_of_all_crops_together(instance_set, tmp_path):
    """Dice per class over the split's voxels (scikit-learn's F1 per class on them), not a
    mean over crops, where a class a crop and its prediction both lack would score 1."""
    from sklearn.metrics import f1_score

    from streamvol.train.evaluation import score

    _, shards = instance_set
    config = TrainConfig(shards=str(shards), epochs=1, mask_labels="classes", **UNET, **FAST)
    trainer = Trainer(config, tmp_path / "run")
    out = trainer.predict("val")
    kept = out["weights"] > 0
    truth, pred = out["targets"][kept].ravel(), out["scores"][kept].ravel()
    names = trainer.task.class_names
    f1 = f1_score(truth, pred, labels=range(len(names)), average=None, zero_division=1.0)
    report = score(out, trainer.task)
    assert list(report["dice_per_class"].values()) == pytest.approx(f1.tolist())
    assert report["dice"] == pytest.approx(float(np.mean(f1[1:])))
