"""Copick segmentations as masks: ``shard --segmentation NAME[:USER[/SESSION]]`` stores each
run's segmentation (``Segmentations/<spacing>_<user>_<session>_<name>[-multilabel].zarr``)
beside its crops, names the labels from the config, leaves out runs without it and refuses
what is ambiguous; a run trained on them learns those names, writes its predictions as the
project's segmentations, and ``score`` finds the masks in the project."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from streamvol import synth
from streamvol.cli import app
from streamvol.errors import BadLabels, MasksLeftOut
from streamvol.io import copick_picks, discover, open_volume, read_copick_labels
from streamvol.predict import score_labels, write_ome_zarr
from streamvol.predict._run import _copick_masks
from streamvol.shard import read_manifest
from streamvol.stream.inspect import summary_table
from streamvol.train import TrainConfig
from streamvol.train.setup import segmentation_task

runner = CliRunner()
SHARD = ["--crop", "16", "--context", "0", "--augment", "flips", "--split", "0.67,0.33"]


def _labels(root: Path, run: str, shape: tuple[int, ...]) -> np.ndarray:
    """Balls of each particle's config label around its picks (10 A voxels)."""
    objects = json.loads((root / "copick_config.json").read_text())["pickable_objects"]
    label = {o["name"]: o["label"] for o in objects}
    out = np.zeros(shape, np.uint8)
    grid = np.indices(shape)
    for name, zyx in copick_picks(root, user="curation")[run].items():
        for p in zyx / 10.0:
            out[sum((g - c) ** 2 for g, c in zip(grid, p, strict=True)) <= 9] = label[name]
    return out


def _write(root: Path, run: str, filename: str, array: np.ndarray) -> Path:
    folder = root / "overlay" / "ExperimentRuns" / run / "Segmentations"
    folder.mkdir(parents=True, exist_ok=True)
    write_ome_zarr(folder / filename, array, (10.0, 10.0, 10.0))
    return folder / filename


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three runs, each with a multilabel segmentation of its particles and a binary one of
    its ribosomes; TS_0 also holds a second owner's ribosomes, TS_1 particles at 20 A, TS_2
    no membrane."""
    root = tmp_path_factory.mktemp("copick") / "project"
    synth.make("tomograms", root, n=3, size=(48, 64, 64), seed=3)
    labels = {}
    for run in ("TS_0", "TS_1", "TS_2"):
        shape = open_volume(next(root.glob(f"static/ExperimentRuns/{run}/*/denoised.zarr"))).shape
        labels[run] = _labels(root, run, shape)
        _write(root, run, "10.000_painter_0_particles-multilabel.zarr", labels[run])
        _write(root, run, "10.000_painter_0_ribosome.zarr", (labels[run] == 4).astype(np.uint8))
        if run != "TS_2":
            _write(root, run, "10.000_membrain_0_membrane.zarr", np.zeros(shape, np.uint8))
    _write(root, "TS_0", "10.000_model_7_ribosome.zarr", np.zeros(labels["TS_0"].shape, np.uint8))
    half = np.zeros((24, 32, 32), np.uint8)  # for a tomogram at another spacing: not read
    _write(root, "TS_1", "20.000_painter_0_particles-multilabel.zarr", half)
    return root, labels


def _shard(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["shard", *args, *SHARD])
    return result.exit_code, " ".join(result.output.split())


def _stored(out: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False))


def test_a_multilabel_segmentation_is_stored_crop_for_crop_with_the_config_s_names(
    project, tmp_path
):
    root, labels = project
    out = tmp_path / "set"
    code, output = _shard(str(root), "--out", str(out), "--segmentation", "particles")
    assert code == 0, output
    manifest = read_manifest(out)
    objects = read_copick_labels(root / "copick_config.json")
    assert manifest["task"] == "segmentation"
    assert manifest["mask_names"] == ["background", *objects.values()]
    assert manifest["config"]["segmentation"] == "particles"
    samples = _stored(out)
    assert len(samples) == 3 * 3 * 4 * 4  # a grid of 16^3 crops over three 48x64x64 runs
    for sample in samples:
        meta = json.loads(sample["json"])
        box = tuple(slice(a, b) for a, b in meta["box"])
        mask = np.load(io.BytesIO(sample["mask.npy"]))
        run = Path(meta["path"]).parents[1].name
        np.testing.assert_array_equal(mask, labels[run][box])
    high = max(int(v.max()) for v in labels.values())
    assert manifest["mask_range"] == [0, high]
    task = segmentation_task(TrainConfig(shards=str(out)), manifest)
    assert task.class_names == tuple(manifest["mask_names"])  # no --mask-labels needed
    table = summary_table(manifest)  # the labels are named: nothing for the run to say
    assert table.title.endswith(f"mask labels 0 to {high}") and table.caption is None
    assert list(table.columns[0].cells) == ["shards", "samples", "MB"]  # no rows of 0 crops


def test_owners_of_one_segmentation_are_refused_then_chosen(project, tmp_path):
    root, _ = project
    code, output = _shard(str(root), "--out", str(tmp_path / "a"), "--segmentation", "ribosome")
    assert code == 1
    assert "copick run 'TS_0': 2 segmentations 'ribosome'" in output
    assert "painter/0" in output and "model/7" in output and "--segmentation ribosome:" in output
    assert not (tmp_path / "a").exists()
    chosen = ["--segmentation", "ribosome:painter"]  # copick's URI: NAME:USER_ID[/SESSION_ID]
    code, output = _shard(str(root), "--out", str(tmp_path / "a"), *chosen)
    assert code == 0, output
    manifest = read_manifest(tmp_path / "a")
    assert manifest["mask_names"] == ["background", "ribosome"]
    assert [Path(s["mask"]).name for s in manifest["sources"]] == [
        "10.000_painter_0_ribosome.zarr"
    ] * 3
    stored = {int(np.load(io.BytesIO(s["mask.npy"])).max()) for s in _stored(tmp_path / "a")}
    assert stored == {0, 1}


def test_runs_without_the_segmentation_are_left_out_with_a_warning(project):
    root, _ = project
    with pytest.warns(
        MasksLeftOut, match="TS_2 has no segmentation 'membrane:membrain/0': left out"
    ):
        dataset = discover(root, segmentation="membrane:membrain/0")
    assert [s.id for s in dataset.sources] == ["TS_0", "TS_1"]
    assert all(s.mask.name == "10.000_membrain_0_membrane.zarr" for s in dataset.sources)


def test_a_segmentation_no_run_holds_is_refused_listing_those_held(project):
    root, _ = project
    with pytest.raises(BadLabels, match="no run holds a segmentation 'ribosomes'") as err:
        discover(root, segmentation="ribosomes")
    assert "particles (multilabel) at 10 by painter/0" in str(err.value)
    with pytest.raises(BadLabels, match="no run holds a segmentation 'ribosome:model/8'"):
        discover(root, segmentation="ribosome:model/8")
    with pytest.raises(BadLabels, match="its voxel spacing is the tomograms'"):
        discover(root, segmentation="particles:painter/0@10.000")
    with pytest.raises(BadLabels, match="segmentation choose among a copick project's"):
        discover(root / "static" / "ExperimentRuns" / "TS_0", segmentation="ribosome")


def test_score_finds_the_masks_of_a_copick_project_as_the_shards_did(project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(project[0], root)
    for base in ("static", "overlay"):  # a run name with a dot keeps it through predict
        (root / base / "ExperimentRuns" / "TS_2").rename(root / base / "ExperimentRuns" / "TS.2")
    labels = {"TS.2" if k == "TS_2" else k: v for k, v in project[1].items()}
    manifest = {"config": {"segmentation": "particles", "tomogram": "denoised", "user_id": []}}
    copick = _copick_masks(manifest)
    assert copick == {"copick_masks": {"segmentation": "particles", "tomogram": "denoised"}}
    names = ["background", *read_copick_labels(root / "copick_config.json").values()]
    pred = tmp_path / "pred"
    for run, volume in labels.items():
        predicted = volume.copy()
        predicted[:, :, :32] = 0  # half of each volume missed
        (pred / run).mkdir(parents=True)
        write_ome_zarr(pred / run / "labels.ome.zarr", predicted, (10.0, 10.0, 10.0))
    summary = {"task": "segmentation", "class_names": names, "experiments": dict.fromkeys(labels)}
    (pred / "predict.json").write_text(json.dumps({**summary, **copick}))
    report = score_labels(pred, root)
    assert sorted(report["experiments"]) == sorted(labels)
    truth = np.stack(list(labels.values()))
    for k, name in enumerate(names[1:], start=1):
        found, held = (truth[..., 32:] == k).sum(), (truth == k).sum()
        expected = 2 * found / (found + held) if held else 1.0
        assert report["overall"]["dice"][name] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("objects", "match"),
    [
        ([{"name": "a", "label": 1}, {"name": "b", "label": 1}], "share label 1"),
        ([{"name": "a", "label": 0}], "label 0; expected an integer >= 1"),
        ([{"name": "a", "label": "2"}], "label '2'"),
    ],
)
def test_config_labels_that_cannot_name_a_multilabel_segmentation_are_refused(
    tmp_path, objects, match
):
    config = tmp_path / "copick_config.json"
    objects = [{**o, "is_particle": False} for o in objects]
    config.write_text(json.dumps({"pickable_objects": objects}))
    with pytest.raises(BadLabels, match=match):
        read_copick_labels(config)


def test_predictions_go_into_the_project_as_its_segmentations_of_another_owner(project, tmp_path):
    import zarr

    from streamvol.train import Trainer, predict_volumes

    root = tmp_path / "project"
    shutil.copytree(project[0], root)
    out = tmp_path / "set"
    code, output = _shard(str(root), "--out", str(out), "--segmentation", "particles:painter")
    assert code == 0, output
    options = {"model_options": {"depth": 1, "base_width": 2}, "workers": 0, "batch_size": 8}
    config = TrainConfig(shards=str(out), model="unet3d", epochs=1, augment="flips", **options)
    Trainer(config, tmp_path / "run").fit()

    summary = predict_volumes(tmp_path / "run", [root], root)  # into the project: copick's habit
    for run in ("TS_0", "TS_1", "TS_2"):
        written = Path(summary["experiments"][run]["copick_segmentation"])
        assert written == (
            root
            / "overlay/ExperimentRuns"
            / run
            / "Segmentations"
            / "10.000_streamvol_0_particles-multilabel.zarr"
        )
        labels = zarr.open_group(str(root / run / "labels.ome.zarr"), mode="r")["0"][:]
        np.testing.assert_array_equal(open_volume(written).data.compute(), labels)
    code, output = _shard(
        str(root), "--out", str(tmp_path / "again"), "--segmentation", "particles"
    )
    assert code == 1 and "painter/0" in output and "streamvol/0" in output
    again = discover(root, segmentation="particles:streamvol/0")
    assert [s.mask.name for s in again.sources] == [
        "10.000_streamvol_0_particles-multilabel.zarr"
    ] * 3
    report = score_labels(root, root)  # the painter's segmentation is the truth
    assert sorted(report["experiments"]) == ["TS_0", "TS_1", "TS_2"]
    assert all(
        Path(e["mask"]).name.startswith("10.000_painter_0") for e in report["experiments"].values()
    )


def test_a_run_that_learned_one_foreground_writes_a_binary_segmentation(project, tmp_path):
    from streamvol.train import Trainer, predict_volumes

    root, _ = project
    out = tmp_path / "set"
    code, output = _shard(str(root), "--out", str(out), "--segmentation", "particles")
    assert code == 0, output
    options = {"model_options": {"depth": 1, "base_width": 2}, "workers": 0, "batch_size": 8}
    config = TrainConfig(
        shards=str(out), model="unet3d", epochs=1, augment="flips", mask_labels="binary", **options
    )
    Trainer(config, tmp_path / "run").fit()
    summary = predict_volumes(tmp_path / "run", [root], tmp_path / "pred")
    written = Path(summary["experiments"]["TS_1"]["copick_segmentation"])
    assert written.name == "10.000_streamvol_0_particles.zarr"  # 1 is foreground, not label 1
    assert set(np.unique(open_volume(written).data.compute())) <= {0, 1}


def test_a_name_multilabel_in_some_runs_and_binary_in_others_is_refused(project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(project[0], root)
    shutil.rmtree(root / "overlay/ExperimentRuns/TS_2/Segmentations/10.000_painter_0_ribosome.zarr")
    _write(root, "TS_2", "10.000_painter_0_ribosome-multilabel.zarr", project[1]["TS_2"])
    with pytest.raises(BadLabels, match="'ribosome' is multilabel in some runs and binary in"):
        discover(root, segmentation="ribosome:painter")
