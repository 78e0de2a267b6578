"""The research workflows from the command line, on real shards: model options, pretraining
then fine-tuning, segmentation cross-validation, TTA, predictions with their labels, and the
comparison of runs; and the training options that train, cv and pretrain share."""

from __future__ import annotations

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from streamvol.cli import app

runner = CliRunner()
QUICK = ["--batch-size", "8", "--workers", "0", "--augment", "flips", "--warmup", "0"]


def _run(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _fails(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a line, not a crash
    return " ".join(result.output.split())


# --- one definition of the training options --------------------------------------------------


def _params(command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def test_train_cv_and_pretrain_take_the_table_of_options_with_trainconfigs_defaults():
    import dataclasses

    from streamvol._cli_options import NOT_FLAGS, OPTIONS
    from streamvol.train.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for command in ("train", "cv", "pretrain"):
        params = _params(command)
        for opt in OPTIONS:
            if command not in opt.commands:
                assert opt.name not in params, (command, opt.name)
                continue
            assert opt.option in params[opt.name].opts, (command, opt.name)
            if opt.name in defaults and opt.type is None:
                assert params[opt.name].default == defaults[opt.name], (command, opt.name)
    covered = {o.name for o in OPTIONS} | set(NOT_FLAGS) | {"model_options", "task"}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= covered
    shared = {"loss", "pretrained", "model_options", "epochs", "mixup", "ema", "freeze_features"}
    assert shared <= set(_params("cv")) and shared <= set(_params("train"))


def test_train_help_lists_the_models_and_panels():
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    for name in ("resnet3d", "se_resnet3d", "simple_cnn", "unet3d", "vgg3d", "vit3d"):
        assert name in text
    assert "streamvol models NAME" in text and "--model-option" in text
    for panel in ("Model", "Loss", "Augmentation", "Fine-tuning", "Detection"):
        assert panel in text
    models = runner.invoke(app, ["models", "resnet3d"], env={"COLUMNS": "200"}).stdout
    assert "r3d_18 | r2plus1d_18 | mc3_18" in models and "batch | group | instance" in models
    assert "vit3d" in runner.invoke(app, ["models"]).stdout


def test_bad_options_answer_with_their_flag(tmp_path):
    assert "--lr 0.0: expected a positive learning rate" in _fails("train", tmp_path, "--lr", "0")
    assert "--timeout -1.0: expected seconds >= 0" in _fails("cv", tmp_path, "--timeout", "-1")
    text = _fails("train", tmp_path, "--model-option", "width=4")
    assert "--model-option width=4: name the model (--model NAME)" in text
    text = _fails("train", tmp_path, "--model", "resnet3d", "--model-option", "variant=x")
    assert "--model-option variant=x: expected one of r3d_18, r2plus1d_18, mc3_18" in text
    assert "--noise -1.0" in _fails("pretrain", tmp_path, "--noise", "-1")


# --- model options --------------------------------------------------------------------------


def test_vit3d_and_resnet3d_train_with_their_options_on_the_shards_crop(cube_shards, tmp_path):
    vit = ["--model-option", "patch_size=4", "--model-option", "dim=16"]
    vit += ["--model-option", "depth=1", "--model-option", "heads=2"]
    _run("train", cube_shards, "--model", "vit3d", *vit, "--epochs", "1", *QUICK,
         "--runs", tmp_path, "--name", "vit")  # fmt: skip
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert config["model_options"] == {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2}
    res = ["--model-option", "variant=mc3_18", "--model-option", "norm=group", "--width", "4"]
    _run("train", cube_shards, "--model", "resnet3d", *res, "--epochs", "1", *QUICK,
         "--max-steps-per-epoch", "2", "--runs", tmp_path, "--name", "mc3")  # fmt: skip
    config = json.loads((tmp_path / "mc3" / "config.json").read_text())
    assert config["model_options"] == {"width": 4, "variant": "mc3_18", "norm": "group"}


# --- pretraining, then fine-tuning ----------------------------------------------------------


def test_pretrain_then_fine_tune_with_progressive_unfreezing(blob_shards, tmp_path):
    corrupt = ["--noise", "0.2", "--mask-ratio", "0.2"]
    out = _run("pretrain", blob_shards, "--model", "simple_cnn", "--epochs", "2", *QUICK,
               *corrupt, "--runs", tmp_path, "--name", "ae")  # fmt: skip
    assert "val_r2" in out and "reconstruction: " in out
    assert (tmp_path / "ae" / "val_reconstruction.png").is_file()
    out = _run("train", blob_shards, "--model", "simple_cnn", "--pretrained",
               tmp_path / "ae" / "best.pt", "--unfreeze-every", "1", "--epochs", "2", *QUICK,
               "--runs", tmp_path, "--name", "tuned")  # fmt: skip
    assert "pretrained: 4 of 8 tensors" in out and "new: classifier, head" in out
    assert "epoch 1/2:" in out and "features: frozen (0 of 2 levels trainable)" in out
    assert "features: level 2 of 2 trainable" in out


# --- segmentation: several models, one set of folds -----------------------------------------


def test_segmentation_cv_with_a_pretrained_cnn_reports_voxel_metrics(seg_folds, tmp_path):
    _run("pretrain", seg_folds, "--model", "simple_cnn", "--epochs", "1", *QUICK,
         "--runs", tmp_path, "--name", "seg-ae")  # fmt: skip
    out = _run("cv", seg_folds, "--model", "simple_cnn", "--epochs", "2", *QUICK, "--lr", "0.01",
               "--loss", "ce+dice", "--pretrained", tmp_path / "seg-ae" / "best.pt",
               "--runs", tmp_path, "--name", "cv-cnn")  # fmt: skip
    assert "pretrained: " in out
    for row in ("sensitivity", "specificity", "roc_auc", "dice", "iou"):
        assert f"│ {row} " in out
    assert "ignore_index" not in out and "None" not in out and "balanced_accuracy" not in out
    summary = json.loads((tmp_path / "cv-cnn" / "cv_report.json").read_text())["summary"]
    assert summary["roc_auc"]["n"] == 3 and 0 <= summary["roc_auc"]["mean"] <= 1
    config = json.loads((tmp_path / "cv-cnn" / "fold0" / "config.json").read_text())
    assert config["loss"] == "ce+dice" and config["pretrained"].endswith("best.pt")


# --- evaluation with TTA, predictions with labels, comparison -------------------------------


@pytest.fixture(scope="module")
def two_runs(cube_shards, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cmp")
    _run("train", cube_shards, "--model", "simple_cnn", "--epochs", "3", *QUICK, "--lr", "3e-3",
         "--runs", runs, "--name", "cnn")  # fmt: skip
    _run("train", cube_shards, "--model", "se_resnet3d", "--model-option", "widths=4,8",
         "--epochs", "2", *QUICK, "--runs", runs, "--name", "se")  # fmt: skip
    return runs


@pytest.mark.parametrize(
    ("tta", "prefix"), [("rot90z", "test_tta_rot90z"), ("all", "test_tta_all")]
)
def test_evaluate_with_turns_about_z(two_runs, tta, prefix):
    out = _run("evaluate", two_runs / "cnn", "--tta", tta)
    assert "test: " in out
    report = json.loads((two_runs / "cnn" / f"{prefix}_report.json").read_text())
    assert report["tta"] == tta and report["n_samples"] == 10


def test_a_tta_outside_the_kinds_is_refused_naming_them(two_runs):
    text = _fails("evaluate", two_runs / "cnn", "--tta", "bogus")
    assert "--tta bogus: expected one of none, flips, rot90z, all" in text


def test_predict_writes_the_true_label_beside_each_score(two_runs, tmp_path):
    _run("predict", two_runs / "cnn", "--split", "test", "--out", tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {"p_flat", "predicted", "label"} <= set(rows[0])
    assert {r["label"] for r in rows} == {"blob", "flat"}
    assert sum(r["label"] == r["predicted"] for r in rows) >= 5


def test_predict_on_new_shards_scores_them_as_the_run_s_classes(two_runs, tmp_path):
    """New data rarely holds every class, or any label: a run predicts it with its own classes
    (blob, flat), and a set of flat samples alone, whose class id 0 is the run's 1, keeps
    its true label; a class the run never learned is refused by name."""
    from tests.train.conftest import _blobs

    def new_set(name: str, keep: str | None, rename: dict[str, str] | None = None) -> str:
        src = _blobs(tmp_path / name, n=6, shape=(12, 12, 12), seed=9)
        rows = (src / "classes.csv").read_text().splitlines()
        for row in rows[1:]:
            sample, label = row.split(",")
            if keep is not None and label != keep:
                (src / f"{sample}.npy").unlink()
        kept = [r for r in rows[1:] if keep is None or r.endswith("," + keep)]
        for old, new in (rename or {}).items():
            kept = [r.replace("," + old, "," + new) for r in kept]
        (src / "classes.csv").write_text("\n".join([rows[0], *kept]) + "\n")
        if keep is None and not rename:
            (src / "classes.csv").unlink()  # unlabelled
        out = tmp_path / f"{name}-shards"
        _run("shard", src, "--out", out, "--plan", "sample", "--crop", "12", "--context", "0",
             "--split", "0,0,1")  # fmt: skip
        return str(out)

    flat = new_set("flat", "flat")
    text = _fails("predict", two_runs / "cnn", tmp_path / "flat", "--out", tmp_path / "v")
    assert "classifies crops, not whole volumes: shard the new data" in text
    assert "--split 0,0,1 puts it all in test), then streamvol predict RUN --shards NEW" in text
    _run("predict", two_runs / "cnn", "--shards", flat, "--out", tmp_path / "flat.csv")
    with open(tmp_path / "flat.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and list(rows[0]) == ["key", "weight", "p_flat", "predicted", "label"]
    assert {r["label"] for r in rows} == {"flat"}

    unlabelled = new_set("unlabelled", None)
    _run("predict", two_runs / "cnn", "--shards", unlabelled, "--out", tmp_path / "u.csv")
    with open(tmp_path / "u.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0]) == ["key", "weight", "p_flat", "predicted"]

    other = new_set("other", None, {"blob": "ring"})
    text = _fails("predict", two_runs / "cnn", "--shards", other, "--out", tmp_path / "o.csv")
    assert "class 'ring' is not one of the run's classes (blob, flat)" in text
    assert not (tmp_path / "o.csv").exists()


def test_compare_draws_both_runs_and_tables_their_metrics_and_parameters(two_runs, tmp_path):
    import torch

    from streamvol import models

    out = _run("compare", two_runs / "cnn", two_runs / "se", "--out", tmp_path / "cmp")
    assert "simple_cnn" in out and "se_resnet3d" in out and "compare.png" in out
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "cmp" / "compare.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    cnn = models.build("simple_cnn", num_classes=2, input_shape=(12, 12, 12))
    assert int(rows["cnn"]["parameters"]) == sum(p.numel() for p in cnn.parameters())
    with torch.device("meta"):
        se = models.build("se_resnet3d", num_classes=2, widths=(4, 8))
    assert int(rows["se"]["parameters"]) == sum(p.numel() for p in se.parameters())
    # a row per metric, a column per run: both runs' counts on the parameters line
    line = next(line for line in out.splitlines() if line.startswith("│ parameters "))
    assert line.split()[3:6:2] == [f"{int(rows[r]['parameters']):,}" for r in ("cnn", "se")]
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["task"] == "classification" and len(result["rows"]) == 2
    assert all(0 <= r["roc_auc"] <= 1 for r in result["rows"])
