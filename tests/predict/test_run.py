"""``predict`` on whole volumes: copick picks in the copick layout and picks.csv in Angstrom,
scored against the reference better than random picks; segmentation runs write OME-Zarr."""

from __future__ import annotations

import csv
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadVolumeValues
from streamvol.io import copick_picks, open_volume
from streamvol.metrics.picking import particle_weight
from streamvol.predict import picks_path, score_picks, split_sources
from streamvol.train import load_predictor, predict_volumes


def _reference_csv(project, runs, path):
    picks = copick_picks(project)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["experiment", "particle_type", "x", "y", "z"])
        for run in runs:
            for kind, zyx in picks[run].items():
                for z, y, x in zyx:
                    writer.writerow([run, kind, x, y, z])
    return path, picks


def _random_csv(picks, runs, extent_angstrom, path, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["experiment", "particle_type", "x", "y", "z"])
        for run in runs:
            for kind, zyx in picks[run].items():
                for z, y, x in rng.uniform(0, 1, (len(zyx), 3)) * extent_angstrom:
                    writer.writerow([run, kind, x, y, z])
    return path


def test_predict_then_score_beats_random_picks(pick_project, pick_run, tmp_path):
    project, _ = pick_project
    run, _ = pick_run
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(run), str(project), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "predict.json").read_text())
    assert set(summary["experiments"]) == {"TS_0", "TS_1", "TS_2", "TS_3"}
    assert summary["thresholds_from"] == "val"
    lines = result.output.splitlines()
    for run_name, entry in summary["experiments"].items():  # one line each, never folded
        assert f"{run_name}: " + ", ".join(f"{k} {v}" for k, v in entry["picks"].items()) in lines
    for run_name in summary["experiments"]:
        for kind in summary["thresholds"]:
            doc = json.loads(picks_path(out, run_name, kind).read_text())
            assert doc["pickable_object_name"] == kind and doc["unit"] == "angstrom"
            assert doc["user_id"] == "streamvol" and doc["session_id"] == "0"
    rows = (out / "picks.csv").read_text().splitlines()
    assert rows[0] == "experiment,particle_type,x,y,z" and len(rows) > 1
    # the output is a copick project with the run's radii and score weights
    written = json.loads((out / "copick_config.json").read_text())["pickable_objects"]
    project_types = json.loads((project / "copick_config.json").read_text())["pickable_objects"]
    expected = {o["name"]: (o["radius"], particle_weight(o["name"], {})) for o in project_types}
    assert {o["name"]: (o["radius"], o["weight"]) for o in written} == expected
    # held out: score the test run only (candidates of other runs are dropped)
    manifest = json.loads((pick_project[1] / "manifest.json").read_text())
    test_runs = [s["id"] for s in split_sources(manifest, "test")]
    ref, picks = _reference_csv(project, test_runs, tmp_path / "ref.csv")
    model = score_picks(out, ref)
    extent = np.array([64, 128, 128]) * 10.0  # z, y, x Angstrom
    baseline = np.mean(
        [
            score_picks(_random_csv(picks, test_runs, extent, tmp_path / "r.csv", seed), ref)[
                "score"
            ]
            for seed in range(5)
        ]
    )
    assert model["score"] > baseline + 0.1, (model["score"], baseline)
    assert score_picks(out / "picks.csv", ref)["score"] == model["score"]


def test_a_volume_with_nan_is_refused_before_anything_is_written(pick_run, tmp_path):
    """``predict`` on two volumes, the second holding NaN and Inf: refused with its file and how
    many voxels, before the first's picks or the output folder exist."""
    import warnings

    import mrcfile

    run, _ = pick_run
    rng = np.random.default_rng(0)
    for name in ("good", "bad"):
        data = rng.normal(size=(32, 32, 32)).astype(np.float32)
        if name == "bad":
            data[3, 3, 3], data[20, 5, 9], data[30, 30, 30] = np.nan, np.inf, -np.inf
        with warnings.catch_warnings(), mrcfile.new(tmp_path / f"{name}.mrc") as mrc:
            warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile's header statistics
            mrc.set_data(data)
            mrc.voxel_size = 10.0
    out = tmp_path / "pred"
    args = ["predict", str(run), str(tmp_path / "good.mrc"), str(tmp_path / "bad.mrc")]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "bad.mrc: 3 NaN or Inf voxels; expected finite values" in said, result.output
    assert "Traceback" not in result.output
    assert not out.exists()

    predictor = load_predictor(run)  # the API on an array: refused the same way
    with pytest.raises(BadVolumeValues, match="the array given: 3 NaN or Inf voxels"):
        predictor.probabilities(data, predictor.window())


def test_tta_none_turns_off_the_tta_a_run_saved(pick_project, pick_run, tmp_path):
    """Settings not given come from thresholds.json; ``--tta none`` is given, not a default."""
    import shutil

    project, _ = pick_project
    run = tmp_path / "run"
    shutil.copytree(pick_run[0], run)
    choices = json.loads((run / "thresholds.json").read_text())
    choices["settings"]["window"]["tta"] = ["flips"]
    (run / "thresholds.json").write_text(json.dumps(choices))
    one = str(
        project / "static" / "ExperimentRuns" / "TS_0" / "VoxelSpacing10.000" / "denoised.zarr"
    )
    for args, want in (([], ["flips"]), (["--tta", "none"], [])):
        out = tmp_path / f"out{len(args)}"
        result = CliRunner().invoke(app, ["predict", str(run), one, "--out", str(out), *args])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "predict.json").read_text())["window"]["tta"] == want


def test_detection_run_without_sources_predicts_its_split(pick_project, pick_run, tmp_path):
    run, _ = pick_run
    summary = predict_volumes(run, None, tmp_path / "val", split="val", threshold=0.9)
    assert len(summary["experiments"]) == 1
    assert set(summary["thresholds"].values()) == {0.9}
    assert summary["thresholds_from"] == "--threshold"


def _segmentation_run(tmp_path):
    """A U-Net trained for one epoch on 4 nuclei samples of 8x16x16: (data, shards)."""
    from streamvol import synth
    from streamvol.shard import parse_config, shard
    from streamvol.train import TrainConfig, Trainer

    data = synth.make("nuclei", tmp_path / "nuclei", n=4, size=(8, 16, 16))
    shards = tmp_path / "seg"
    shard(parse_config([data], plan="grid", crop="8,16,16", context=0, split="0.5,0.5"), shards)
    config = TrainConfig(
        shards=str(shards),
        model="unet3d",
        model_options={"depth": 2, "base_width": 4},
        epochs=1,
        batch_size=4,
        workers=0,
        augment="none",
    )
    Trainer(config, tmp_path / "run").fit()
    return data, shards


def test_segmentation_run_writes_ome_zarr_volumes(tmp_path):
    data, shards = _segmentation_run(tmp_path)
    summary = predict_volumes(tmp_path / "run", [data], tmp_path / "out", overlap=0.5)
    assert len(summary["experiments"]) == 4
    name = sorted(summary["experiments"])[0]
    labels = open_volume(tmp_path / "out" / name / "labels.ome.zarr")
    assert labels.shape == (8, 16, 16) and labels.dtype == np.uint8
    import zarr

    probs = zarr.open_group(str(tmp_path / "out" / name / "probabilities.ome.zarr"), mode="r")
    p = np.asarray(probs["0"][...], np.float32)
    assert p.shape == (2, 8, 16, 16)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=2e-3)  # softmax, stored as float16
    clear = np.abs(p[1] - p[0]) > 0.01  # float16 ties aside, labels are the argmax
    np.testing.assert_array_equal(np.asarray(labels.data)[clear], p.argmax(0)[clear])
    assert summary["class_names"] == ["background", "foreground"]
    # the run kept its shard set's manifest: it predicts new volumes without the set
    kept = json.loads((tmp_path / "run" / "shards_manifest.json").read_text())
    assert kept == json.loads((shards / "manifest.json").read_text())
    shards.rename(tmp_path / "moved")
    one = [str(tmp_path / "run"), str(data / name), "--out", str(tmp_path / "one")]
    result = CliRunner().invoke(app, ["predict", *one])
    assert result.exit_code == 0, result.output
    assert "\n1 volume in " in result.output and (tmp_path / "one" / name).is_dir()
    again = open_volume(tmp_path / "one" / name / "labels.ome.zarr").data
    np.testing.assert_array_equal(np.asarray(again), np.asarray(labels.data))

    # streamvol score: each volume's Dice per class is scikit-learn's F1 over its voxels
    from sklearn.metrics import f1_score, jaccard_score

    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "out"), str(data), "--out", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 0, result.output
    assert "Dice per class" in result.output and "mean over the foreground" in result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert (
        sorted(report["experiments"]) == sorted(summary["experiments"]) and not report["unscored"]
    )
    every_p, every_t = [], []
    for name, row in report["experiments"].items():
        p = np.asarray(open_volume(tmp_path / "out" / name / "labels.ome.zarr").data).ravel()
        t = np.asarray(open_volume(data / name / "mask").data).ravel()
        every_p.append(p)
        every_t.append(t)
        f1 = f1_score(t, p, labels=[0, 1], average=None, zero_division=1.0)
        assert list(row["dice"].values()) == pytest.approx(f1.tolist())
        assert row["voxels"] == t.size
    p, t = np.concatenate(every_p), np.concatenate(every_t)
    overall = report["overall"]
    assert overall["mean_dice"] == pytest.approx(f1_score(t, p, zero_division=1.0))
    assert overall["mean_iou"] == pytest.approx(jaccard_score(t, p, zero_division=1.0))
    # one volume's prediction against the whole folder: the others are named, not scored
    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "one"), str(data), "--out", str(tmp_path / "one.json")]
    )
    assert result.exit_code == 0, result.output
    scored = list(json.loads((tmp_path / "one.json").read_text())["experiments"])
    others = sorted(set(summary["experiments"]) - set(scored))
    assert len(scored) == 1 and len(others) == 3
    assert others and f"has no prediction for them: REF's {', '.join(others)}" in result.output


def test_memory_does_not_grow_with_the_number_of_tomograms(pick_project, pick_run, tmp_path):
    """Peak numpy memory (tracemalloc sees numpy's allocations) for four tomograms is that
    of one: each volume's input and probabilities are gone before the next is read."""
    import tracemalloc

    project, _ = pick_project
    run, _ = pick_run
    one = project / "static" / "ExperimentRuns" / "TS_0" / "VoxelSpacing10.000" / "denoised.zarr"
    peaks = []
    for k, sources in enumerate(([one], [project])):
        tracemalloc.start()
        summary = predict_volumes(run, sources, tmp_path / f"m{k}")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(summary["experiments"]) == (1, 4)[k]
    # the probabilities of one tomogram alone (6 types, float32) are a good part of the peak
    assert peaks[0] > 6 * 32 * 64 * 64 * 4
    assert peaks[1] < 1.25 * peaks[0], peaks


def test_segmentation_memory_does_not_grow_with_the_volume_s_depth(tmp_path):
    """A stack 3x as deep costs the same peak numpy memory (tracemalloc sees numpy's
    allocations): planes are read, predicted and written block by block, as the windows pass
    them (chunks of 64 planes: both stacks fill whole rows of them). The labels and
    probabilities written are those of the whole volume at once."""
    import tracemalloc

    import tifffile
    import zarr

    _segmentation_run(tmp_path)
    rng = np.random.default_rng(0)
    stacks = {}
    for depth in (64, 192):  # TIFF: tracemalloc counts a memory-mapped .npy as allocated
        stacks[depth] = tmp_path / f"stack{depth}.tif"
        tifffile.imwrite(stacks[depth], rng.normal(1000, 200, (depth, 64, 64)).astype(np.uint16))
    peaks = {}
    for depth, path in stacks.items():
        tracemalloc.start()
        predict_volumes(tmp_path / "run", [path], tmp_path / f"p{depth}", overlap=0.5)
        peaks[depth] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[192] < 1.25 * peaks[64], peaks

    predictor = load_predictor(tmp_path / "run")
    window = predictor.window(overlap=0.5)
    whole = predictor.probabilities(open_volume(stacks[192]), window)
    out = tmp_path / "p192" / "stack192"
    probs = zarr.open_group(str(out / "probabilities.ome.zarr"), mode="r")["0"][...]
    labels = np.asarray(open_volume(out / "labels.ome.zarr").data)
    np.testing.assert_array_equal(probs, whole.astype(np.float16))
    np.testing.assert_array_equal(labels, whole.argmax(0))


@settings(max_examples=25, deadline=None)
@given(
    depth=st.integers(1, 150),
    cuts=st.lists(st.integers(1, 149), max_size=6),
    channels=st.sampled_from([0, 2]),
)
def test_an_ome_zarr_written_in_blocks_holds_every_plane(depth, cuts, channels):
    """Blocks of any sizes, across rows of 64-plane chunks or not, give the volume."""
    import zarr

    from streamvol.predict import OmeZarrWriter

    shape = (*(channels,) * bool(channels), depth, 5, 6)
    volume = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    edges = [0, *sorted({c for c in cuts if c < depth}), depth]
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "v.ome.zarr"
        with OmeZarrWriter(target, shape, np.uint16, None) as writer:
            for z0, z1 in itertools.pairwise(edges):
                writer.write(z0, volume[..., z0:z1, :, :])
        written = zarr.open_group(str(target), mode="r")["0"]
        np.testing.assert_array_equal(written[...], volume)


def test_an_ome_zarr_written_in_blocks_replaces_its_target_only_when_whole(tmp_path):
    from streamvol.errors import BadInput
    from streamvol.predict import OmeZarrWriter, write_ome_zarr

    target = tmp_path / "labels.ome.zarr"
    write_ome_zarr(target, np.ones((4, 8, 8), np.uint8), (10.0, 10.0, 10.0))
    bad_blocks = {
        r"labels.ome.zarr: a block of planes of \(4, 8, 8\) must have shape": [
            (0, 2, 8),
            (2, 2, 9),
        ],
        r"planes 2..4 of 4; expected the next block to start at plane 0": [(2, 2, 8)],
        r"planes 2..5 of 4; expected": [(0, 2, 8), (2, 3, 8)],
        r"planes 2..4 were never written; nothing was kept": [(0, 2, 8)],
    }
    for refused, blocks in bad_blocks.items():
        with (
            pytest.raises(BadInput, match=refused),
            OmeZarrWriter(target, (4, 8, 8), np.uint8, None) as writer,
        ):
            for z0, n, x in blocks:
                writer.write(z0, np.full((n, 8, x), 7, np.uint8))
        assert not (tmp_path / "labels.ome.zarr.partial").exists()
        kept = open_volume(target)
        assert kept.voxel_size == (10.0, 10.0, 10.0)
        np.testing.assert_array_equal(np.asarray(kept.data), 1)
    with OmeZarrWriter(target, (4, 8, 8), np.uint8, (5.0, 5.0, 5.0)) as writer:
        writer.write(0, np.full((2, 8, 8), 2, np.uint8))
        writer.write(2, np.full((2, 8, 8), 3, np.uint8))
    written = open_volume(target)
    expected = np.broadcast_to(np.repeat([2, 3], 2)[:, None, None], (4, 8, 8))
    np.testing.assert_array_equal(np.asarray(written.data), expected)
    assert written.voxel_size == (5.0, 5.0, 5.0)


def test_predict_reads_the_tomograms_its_runs_shards_read(pick_project, pick_run, tmp_path):
    """A run of a project with two tomograms at two voxel spacings: without --tomogram and
    --voxel-spacing, ``predict`` reads those the run's shards chose; given, those asked for."""
    import shutil

    from streamvol.predict import predict_volumes as predict_with

    project, _ = pick_project
    run, _ = pick_run
    root = tmp_path / "project"
    shutil.copytree(project / "static/ExperimentRuns/TS_3", root / "static/ExperimentRuns/TS_3")
    shutil.copy(project / "copick_config.json", root / "copick_config.json")
    spacing = root / "static/ExperimentRuns/TS_3/VoxelSpacing10.000"
    shutil.copytree(spacing / "denoised.zarr", spacing / "wbp.zarr")
    shutil.copytree(spacing, spacing.with_name("VoxelSpacing20.000"))
    predictor = load_predictor(run, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"several voxel spacings.*--voxel-spacing"):
        predict_with(predictor, run, [root], tmp_path / "p0")  # the run's shards chose neither
    # the manifest of shards written with `--tomogram wbp --voxel-spacing 10`
    config = {**predictor.manifest["config"], "tomogram": "wbp", "voxel_spacing": 10.0}
    predictor.manifest = {**predictor.manifest, "config": config}
    chosen = predict_with(predictor, run, [root], tmp_path / "p1")
    asked = predict_with(
        predictor, run, [root], tmp_path / "p2", tomogram="denoised", voxel_spacing=20
    )
    assert chosen["experiments"]["TS_3"]["path"] == str(spacing / "wbp.zarr")
    assert asked["experiments"]["TS_3"]["path"] == str(
        spacing.with_name("VoxelSpacing20.000") / "denoised.zarr"
    )


def test_predict_into_the_project_keeps_its_config(pick_project, pick_run, tmp_path):
    """``predict --out PROJECT``: the picks go beside the curated ones, and the project's own
    config (its roots, weights, colours) stays as it is, with a warning for a type it lacks."""
    import shutil

    from streamvol.predict import predict_volumes as predict_with

    project, _ = pick_project
    run, _ = pick_run
    root = tmp_path / "project"
    shutil.copytree(project / "static/ExperimentRuns/TS_3", root / "static/ExperimentRuns/TS_3")
    doc = json.loads((project / "copick_config.json").read_text())
    doc["pickable_objects"] = [o for o in doc["pickable_objects"] if o["name"] != "ribosome"]
    doc["description"] = "the lab's own"
    (root / "copick_config.json").write_text(json.dumps(doc))
    before = (root / "copick_config.json").read_bytes()
    predictor = load_predictor(run, device="cpu")
    with pytest.warns(UserWarning, match=r"kept as it is; it does not name ribosome"):
        predict_with(predictor, run, [root], root)
    assert (root / "copick_config.json").read_bytes() == before
    assert picks_path(root, "TS_3", "ribosome").is_file()


def test_copick_runs_keep_their_names_in_predictions(pick_project, pick_run, tmp_path):
    """A run named ``TS.3`` (its shard key is ``TS-3``): predictions go to that run's folder
    and picks.csv under that name, so ``score`` against the project finds the experiment."""
    import shutil

    project, _ = pick_project
    run, _ = pick_run
    root = tmp_path / "project"
    for part in ("static", "overlay"):
        shutil.copytree(project / part / "ExperimentRuns/TS_3", root / part / "ExperimentRuns/TS.3")
    shutil.copy(project / "copick_config.json", root / "copick_config.json")
    predict_volumes(run, [root], tmp_path / "pred")
    assert picks_path(tmp_path / "pred", "TS.3", "ribosome").is_file()
    rows = (tmp_path / "pred" / "picks.csv").read_text().splitlines()[1:]
    assert rows and all(row.startswith("TS.3,") for row in rows)
    report = score_picks(tmp_path / "pred", root)
    assert report["experiments"] == {"scored": ["TS.3"], "dropped": [], "unpredicted": []}


def test_a_corrupt_kept_manifest_is_named(tmp_path):
    from streamvol.errors import RunError, ShardError
    from streamvol.train.runs import trained_manifest

    assert trained_manifest(tmp_path) is None  # an older run: predict reads the shard set
    kept = tmp_path / "shards_manifest.json"
    kept.write_text('{"format": "streamvol-shards", ')
    with pytest.raises(RunError, match=rf"{kept}: corrupt \(.*\); copy the shard set's manifest"):
        trained_manifest(tmp_path)
    kept.write_text("{}")
    with pytest.raises(ShardError, match=rf"{kept}: format None, expected 'streamvol-shards'"):
        trained_manifest(tmp_path)
