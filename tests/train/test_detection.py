"""Detection training on points shards of a synthetic copick project: the run chooses a
threshold per type on the whole validation tomogram, evaluates whole test tomograms, resumes
exactly, and refuses what it cannot train."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadOption
from streamvol.train import TrainConfig, Trainer, evaluate

TYPES = {
    "apo-ferritin",
    "beta-amylase",
    "beta-galactosidase",
    "ribosome",
    "thyroglobulin",
    "virus-like-particle",
}
TINY = {
    "task": "detection",
    "model": "unet3d",
    "model_options": {"base_width": 4, "depth": 2},
    "batch_size": 8,
    "workers": 0,
    "augment": "flips",
    "warmup": 0,
}


def test_run_chooses_thresholds_on_whole_validation_tomograms(pick_run):
    run, output = pick_run
    assert "val (1 tomogram, whole)" in output and "score (weighted F-beta" in output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= line["val_czii"] <= 1.0 and line["val_loss"] > 0 for line in lines)
    choices = json.loads((run / "thresholds.json").read_text())
    assert set(choices["thresholds"]) == TYPES and choices["from"] == "val"
    assert all(0 < t < 1 for t in choices["thresholds"].values())
    assert choices["settings"]["window"]["patch"] == [16, 16, 16]
    report = json.loads((run / "val_report.json").read_text())
    assert report["experiments"] == ["TS_1"] or len(report["experiments"]) == 1
    total = _windows(run, report, "val")  # the whole tomogram's windows, not crops' batches
    assert f"validation of the best weights (whole tomograms): {total}/{total} windows" in output
    assert re.search(r"epoch 8/8 validation: (\d+)/\1 batches", output)  # the last one counted
    for row in report["per_type"].values():
        assert row["tp"] + row["fn"] == 4  # four particles of each type in the run
    assert (run / "val_thresholds.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((run / "config.json").read_text())
    assert config["model_options"] == {"base_width": 8, "depth": 2}
    assert config["target"] == "sphere" and config["pos_weight"] == 256.0


def test_evaluate_predicts_the_test_tomograms_whole(pick_run):
    run, _ = pick_run
    report = evaluate(run, split="test")
    assert report["split"] == "test" and len(report["experiments"]) == 1
    assert report["thresholds"] == json.loads((run / "thresholds.json").read_text())["thresholds"]
    assert 0.0 <= report["score"] <= 1.0
    saved = json.loads((run / "test_report.json").read_text())
    assert saved["score"] == pytest.approx(report["score"])
    header = (run / "test_picks.csv").read_text().splitlines()[0]
    assert header == "experiment,particle_type,x,y,z"
    env = {"STREAMVOL_PROGRESS_EVERY": "0"}  # a progress line on every update
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test"], env=env)
    assert result.exit_code == 0 and "test (1 tomogram, whole)" in result.output
    total = _windows(run, report, "test")
    assert f"evaluate test: {total}/{total} windows, " in result.output


def _windows(run, report, split):
    """The model calls predicting ``split``'s tomograms whole takes with the report's window."""
    from streamvol.io import open_volume
    from streamvol.predict import Window, count_windows, split_sources

    manifest = json.loads((run / "shards_manifest.json").read_text())
    window = Window(**{**report["window"], "tta": tuple(report["window"]["tta"])})
    level = manifest["config"]["level"]
    shapes = [open_volume(s["path"], level=level).shape for s in split_sources(manifest, split)]
    return sum(count_windows(shape, window) for shape in shapes)


def test_progress_counts_validation_batches_and_whole_tomogram_windows(pick_run):
    """Each pass reports its start and its end: the validation crops' batches, and every window
    of the tomograms a report predicts whole, summed over the tomograms."""
    run, _ = pick_run
    calls = []
    report = evaluate(run, split="test", progress=lambda done, total: calls.append((done, total)))
    total = _windows(run, report, "test")
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and {t for _, t in calls} == {total}
    trainer = Trainer.for_evaluation(TrainConfig.load(run / "config.json"), run)
    calls.clear()
    trainer.validate(progress=lambda done, total: calls.append((done, total)))
    batches = calls[0][1]
    assert batches > 1 and calls == [(done, batches) for done in range(batches + 1)]


def test_compare_refuses_runs_of_different_tasks_before_evaluating_any(
    pick_run, cube_shards, tmp_path
):
    """A picker beside a classifier: refused at once, naming each run's task, not after the
    whole tomograms and the crops have been predicted."""
    from streamvol.errors import RunError
    from streamvol.train.compare import compare_runs

    run, _ = pick_run
    crops = tmp_path / "crops"
    config = TrainConfig(
        shards=str(cube_shards), model="simple_cnn", epochs=1, workers=0, augment="flips"
    )
    Trainer(config, crops).fit()
    evaluated = []
    with pytest.raises(RunError, match="different tasks") as failed:
        compare_runs([crops, run], tmp_path / "c", progress=lambda *a: evaluated.append(a))
    assert "'crops': 'classification'" in str(failed.value) and "'pick': 'detection'" in str(
        failed.value
    )
    assert evaluated == [] and not (crops / "test_report.json").exists()
    assert not (tmp_path / "c").exists()


def test_resume_gives_the_same_weights(pick_project, tmp_path):
    _, shards = pick_project
    config = TrainConfig(shards=str(shards), epochs=2, **TINY)
    Trainer(config, tmp_path / "whole").fit()
    assert Trainer(config, tmp_path / "cut").fit(stop_after=1) == {"stopped_after": 1}
    Trainer(config, tmp_path / "cut", resume=True).fit()
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_heatmap_targets_with_a_focal_loss_train(pick_project, tmp_path):
    _, shards = pick_project
    config = TrainConfig(shards=str(shards), epochs=1, target="heatmap", loss="focal+dice", **TINY)
    trainer = Trainer(config, tmp_path / "heat")
    assert trainer.model.head.out_channels == 6  # one channel per type, no background
    report = trainer.fit()
    assert report["task"] == "detection" and "score" in report


def test_detection_refuses_what_it_cannot_train(pick_project, blob_shards, tmp_path):
    _, shards = pick_project
    with pytest.raises(ValueError, match=r"no points\.npy"):
        Trainer(TrainConfig(shards=str(blob_shards), **TINY), tmp_path / "a")
    with pytest.raises(BadOption, match=r"mixup=0\.4: mixup and cutmix blend images"):
        Trainer(TrainConfig(shards=str(shards), mixup=0.4, **TINY), tmp_path / "b")
    with pytest.raises(BadOption, match=r"loss='mse'.* for the sphere target"):
        Trainer(TrainConfig(shards=str(shards), loss="mse", **TINY), tmp_path / "c")
    with pytest.raises(ValueError, match="target='ball'"):
        TrainConfig(shards=str(shards), target="ball")


def test_cross_validation_scores_each_folds_tomograms_whole(pick_project, tmp_path):
    """``cv`` of a detection set: each fold chooses its thresholds on its validation fold's
    tomograms, whole, and the table shows the CZII score and each type's F-beta over folds."""
    from streamvol.shard import parse_config, shard
    from tests.conftest import PICK_TRAIN

    data, _ = pick_project
    folds = tmp_path / "folds"
    config = parse_config([data], plan="points", crop="16", level=1, folds=2, augment="flips")
    shard(config, folds)
    manifest = json.loads((folds / "manifest.json").read_text())
    args = [*PICK_TRAIN, "--epochs", "1", "--runs", str(tmp_path / "runs"), "--name", "cv"]
    result = CliRunner().invoke(app, ["cv", str(folds), *args])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "runs" / "cv" / "cv_report.json").read_text())
    for k in range(2):
        fold = json.loads((tmp_path / "runs" / "cv" / f"fold{k}" / "report.json").read_text())
        ids = {s["id"] for s in manifest["sources"] if s["id"] in fold["experiments"]}
        in_fold = {
            key.split("_z")[0] for rec in manifest["splits"][f"fold{k}"] for key in rec["keys"]
        }
        assert fold["split"] == f"fold{k}" and ids == in_fold and ids
        assert report["summary"]["score"]["values"][k] == pytest.approx(fold["score"])
        assert f"fold{k}: score {fold['score']:.3f}" in result.output
    assert report["summary"]["score"]["n"] == 2 and "window.overlap" not in report["summary"]
    assert "per_type.ribosome.fbeta" in result.output


def test_compare_tables_detection_runs(pick_project, pick_run, tmp_path):
    """Two detection runs side by side: model, parameters and the CZII score of each, from the
    reports their evaluations wrote (a second compare evaluates nothing again)."""
    from streamvol.train.compare import compare_runs

    _, shards = pick_project
    run, _ = pick_run
    small = tmp_path / "small"
    config = TrainConfig(shards=str(shards), epochs=1, **TINY)
    trainer = Trainer(config, small)
    trainer.fit()
    result = CliRunner().invoke(
        app, ["compare", str(run), str(small), "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]
    params = sum(p.numel() for p in trainer.model.parameters())
    assert [r["parameters"] for r in rows][1] == params and rows[0]["parameters"] > params
    for row, folder in zip(rows, (run, small), strict=True):
        assert row["score"] == json.loads((folder / "test_report.json").read_text())["score"]
    evaluated = []
    compare_runs([run, small], tmp_path / "again", progress=lambda *a: evaluated.append(a))
    assert evaluated == []
