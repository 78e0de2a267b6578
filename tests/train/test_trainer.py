"""The training loop on real shards: it learns, resumes exactly, writes its run folder, stops
early, evaluates with the validation threshold, cross-validates, and refuses bad setups."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.train import RunError, TrainConfig, Trainer, evaluate
from streamvol.train.cv import cross_validate
from streamvol.train.runs import predict_run

FAST = {"batch_size": 8, "workers": 0, "lr": 3e-3, "augment": "flips", "warmup": 0}


def test_a_short_run_learns_well_above_chance(blob_shards, tmp_path):
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=6, **FAST)
    report = Trainer(config, tmp_path / "run").fit()
    assert report["balanced_accuracy"] >= 0.9  # chance is 0.5
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "report.json", "curves.png"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    for name in ("val_roc.png", "val_pr.png", "val_confusion.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    state = torch.load(run / "best.pt", weights_only=True)
    assert set(state) >= {"model", "optimizer", "schedule", "loader", "epoch", "rng"}


@pytest.mark.parametrize("val_every", [1, 2])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(blob_shards, tmp_path, val_every):
    """Also stopped after an epoch that was not validated (``val_every=2``: no best.pt yet)."""
    config = TrainConfig(
        shards=str(blob_shards), model="simple_cnn", epochs=3, ema=0.9, val_every=val_every, **FAST
    )
    whole = Trainer(config, tmp_path / "whole")
    whole.fit()
    cut = Trainer(config, tmp_path / "cut")
    assert cut.fit(stop_after=1) == {"stopped_after": 1}
    resumed = Trainer(config, tmp_path / "cut", resume=True)
    assert resumed.epoch == 1
    resumed.fit()
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][key], b["ema"]["model"][key]), key
    timed = ("seconds", "train_samples_per_s")
    a_rows, b_rows = (
        [{k: v for k, v in row.items() if k not in timed} for row in json.loads(h["history"])]
        for h in (a, b)
    )
    assert a_rows == b_rows  # losses, validations, best marks


def test_the_run_owns_its_random_state(blob_shards, tmp_path):
    """Initial weights and dropout (simple_cnn has some) follow the seed alone, whatever the
    caller's torch state, and the caller's state is left as it was."""
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=2, **FAST)
    weights = []
    for i, caller_seed in enumerate((1, 2)):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        trainer = Trainer(config, tmp_path / f"r{i}")
        trainer.fit()
        assert torch.equal(torch.get_rng_state(), before)
        weights.append(trainer.model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    torch.manual_seed(1)
    other = Trainer(replace(config, seed=config.seed + 1), tmp_path / "other").model.state_dict()
    first = next(iter(other))
    assert not torch.equal(other[first], Trainer(config, tmp_path / "r2").model.state_dict()[first])


def test_existing_run_needs_resume_and_same_config(blob_shards, tmp_path):
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=1, **FAST)
    Trainer(config, tmp_path / "r").fit()
    with pytest.raises(RunError, match="--resume"):
        Trainer(config, tmp_path / "r")
    with pytest.raises(RunError, match="different configuration") as err:
        Trainer(replace(config, lr=0.1, epochs=3), tmp_path / "r", resume=True)
    assert "(epochs: 1 -> 3; lr: 0.003 -> 0.1); resume with the run's options" in str(err.value)
    assert f"--pretrained {tmp_path / 'r' / 'best.pt'}" in str(err.value)
    Trainer(replace(config, loader_timeout=5.0), tmp_path / "r", resume=True)  # operational


def test_early_stopping_stops(blob_shards, tmp_path):
    config = TrainConfig(
        shards=str(blob_shards),
        model="simple_cnn",
        epochs=8,
        early_stopping=1,
        **{**FAST, "lr": 1e-9},
    )
    report = Trainer(config, tmp_path / "es").fit()
    assert report["stopped_early"]
    assert len(report["history"]) < 8


def test_best_pt_breaks_a_tied_metric_by_the_lower_validation_loss(
    blob_shards, tmp_path, monkeypatch
):
    """A saturated Dice or a discrete accuracy ties often: the tied epoch with the lower
    validation loss becomes best.pt, while early stopping still waits for a higher metric."""
    scripted = iter(
        [(0.5, 1.0), (0.5, 0.9), (0.5, 0.95), (0.5, 0.9), (0.75, 1.2), (0.75, 1.1), (0.5, 0.1)]
    )
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=7, **FAST)
    trainer = Trainer(config, tmp_path / "tie")

    def validate(progress=None):  # scripted epochs; finish() still scores best.pt for real
        accuracy, loss = next(scripted)
        return {"val_loss": loss, "val_balanced_accuracy": accuracy}

    monkeypatch.setattr(trainer, "validate", validate)
    trainer.fit()
    lines = [
        json.loads(line) for line in (tmp_path / "tie" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [e["epoch"] for e in lines if e.get("best")] == [1, 2, 5, 6]
    assert torch.load(tmp_path / "tie" / "best.pt", weights_only=True)["epoch"] == 6
    assert trainer.stale == 2  # epochs 6 and 7 gained no metric


def test_evaluate_uses_the_validation_threshold_and_writes_plots(blob_shards, tmp_path):
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=4, **FAST)
    Trainer(config, tmp_path / "ev").fit()
    chosen = json.loads((tmp_path / "ev" / "threshold.json").read_text())["threshold"]
    curves = (tmp_path / "ev" / "curves.png").read_bytes()
    report = evaluate(tmp_path / "ev", split="test")
    assert (tmp_path / "ev" / "curves.png").read_bytes() == curves  # the whole run's curves stay
    assert report["threshold"] == pytest.approx(chosen)
    assert report["split"] == "test" and report["n_samples"] == 12
    assert (tmp_path / "ev" / "test_confusion.png").is_file()
    tta = evaluate(tmp_path / "ev", split="test", tta=True)
    assert tta["tta"] and tta["n_samples"] == 12
    out = predict_run(tmp_path / "ev", tmp_path / "pred.csv", split="test")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["predicted"] for r in rows} <= {"blob", "flat"}


def test_cross_validation_over_fold_shards(blob_folds, tmp_path):
    config = TrainConfig(shards=str(blob_folds), model="simple_cnn", epochs=2, **FAST)
    result = cross_validate(config, tmp_path / "cv")
    assert result["folds"] == 3
    summary = result["summary"]
    assert summary["balanced_accuracy"]["n"] == 3
    assert 0.0 <= summary["balanced_accuracy"]["mean"] <= 1.0
    assert (tmp_path / "cv" / "cv_roc.png").is_file()
    assert (tmp_path / "cv" / "cv_report.json").is_file()
    for k in range(3):
        assert json.loads((tmp_path / "cv" / f"fold{k}" / "config.json").read_text())[
            "val_folds"
        ] == [k]


def test_augmentation_must_fit_the_stored_margin(blob_shards, tmp_path):
    config = TrainConfig(
        shards=str(blob_shards), model="simple_cnn", epochs=1, **{**FAST, "augment": "default"}
    )
    with pytest.raises(RunError, match=r"margin of \(0, 0, 0\).*--context auto"):
        Trainer(config, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_the_start_line_says_where_augmentation_runs(blob_shards, tmp_path):
    """--augment-device gpu without CUDA augments each batch on the CPU, in the training
    process: the first line says so, as it names the workers' augmentation otherwise."""
    from streamvol.cli import _start_line

    def start(**options) -> str:
        config = TrainConfig(shards=str(blob_shards), model="simple_cnn", **{**FAST, **options})
        return _start_line(Trainer(config, tmp_path / str(len(list(tmp_path.iterdir())))))

    assert start(augment_device="gpu").endswith(
        "0 loader workers, --augment flips on each batch on cpu -> " + str(tmp_path / "0")
    )
    assert ", 2 loader workers, --augment flips in the workers -> " in start(workers=2)
    line = start(augment="none", max_steps_per_epoch=1)
    assert ": 1 batch of 8 an epoch, " in line and ", --augment none -> " in line


def test_a_cpu_trainer_keeps_freed_memory_for_the_next_step(blob_shards, tmp_path):
    """A step's activations are hundreds of MB: glibc maps each afresh, and faults in and
    zeroes its pages, at every step unless freed memory stays in the process, which a trainer
    on the CPU makes it do, and bench's timed step as well. Counted in minor page faults: 64 MB
    are 16,384 pages."""
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt")
    config = {"shards": str(blob_shards), "model": "simple_cnn", "device": "cpu", **FAST}
    trainer = f"""
from streamvol.train import TrainConfig, Trainer
Trainer(TrainConfig(**{config!r}), sys.argv[1])
"""
    bench = f"""
from streamvol.bench.loader import BenchConfig, trainer_rate
bench = BenchConfig(shards={str(blob_shards)!r}, batch_size=2, model="simple_cnn")
trainer_rate(bench, torch.device("cpu"), steps=1, warmup=0)
"""

    def faults(setup: str, keep: str) -> tuple[int, int]:
        code = f"""
import resource, sys, torch
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = min(faults() for _ in range(3))
{setup}
print(default, min(faults() for _ in range(3)))  # the heap settles after a first one
"""
        env = {**os.environ, "STREAMVOL_KEEP_FREED_MEMORY": keep}
        run = [sys.executable, "-c", code, str(tmp_path / f"{len(setup)}-{keep}")]
        done = subprocess.run(run, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        default, after = map(int, done.stdout.split())
        return default, after

    for setup in (trainer, bench):
        default, after = faults(setup, "1")
        assert default > 15_000 and after < 1_000
    default, after = faults(trainer, "0")  # STREAMVOL_KEEP_FREED_MEMORY=0: glibc as it is
    assert default > 15_000 and after > 15_000


def test_a_cpu_trainer_making_its_own_samples_still_keeps_freed_memory_for_steps(
    blob_shards, tmp_path
):
    """With ``--workers 0`` the loader makes samples in the trainer's process and asks for the
    samples' lesser setting (``core.heap``), which must not replace the trainer's."""
    import platform

    from streamvol.core import heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt")
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=1, **FAST)
    heap.give_freed_memory_back()  # as a fresh process starts
    Trainer(config, tmp_path / "run").fit()
    assert heap.kept() == "steps"


def test_a_cpu_training_run_evaluates_without_forking_workers(blob_shards, tmp_path, monkeypatch):
    """Each evaluation pass's workers would be forked from the trainer, write-protecting its
    heap (the gigabytes it keeps for its steps), to be faulted in again page by page: a CPU
    training run makes its evaluation samples itself. Same scores as with workers (a finished
    run's evaluation forks them, before its heap grows)."""
    from streamvol.train import loop

    made = []

    def counting_loader(ds, batch_size, workers, **options):
        made.append((ds.name, workers))
        return loader(ds, batch_size, workers, **options)

    loader = loop.loader
    monkeypatch.setattr(loop, "loader", counting_loader)
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=2, **FAST)
    config = replace(config, workers=2)
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    trained = trainer.predict()
    assert made[0][1] == 2  # the training split's loader
    assert len(made) >= 4 and {workers for _, workers in made[1:]} == {0}
    made.clear()
    fresh = Trainer.for_evaluation(config, tmp_path / "run").predict()
    assert [workers for _, workers in made] == [2]
    order = np.argsort(fresh["keys"])
    assert sorted(trained["keys"]) == list(np.asarray(fresh["keys"])[order])
    np.testing.assert_allclose(
        trained["scores"][np.argsort(trained["keys"])], fresh["scores"][order], atol=1e-6
    )


def test_a_run_folder_has_one_trainer_at_a_time(blob_shards, tmp_path):
    """A second trainer of the same run while the first trains (the same command twice, with
    --resume) is refused naming the holder before it starts (the CLI's start line waits for the
    lock), and writes nothing; the lock goes with the run."""
    from streamvol.errors import FolderLocked

    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=2, **FAST)
    run, refused, started = tmp_path / "run", [], []

    def second_trainer(values: dict) -> None:
        with pytest.raises(FolderLocked) as caught:
            Trainer(config, run, resume=True).fit(on_start=lambda: started.append("second"))
        refused.append(str(caught.value))

    Trainer(config, run).fit(on_epoch=second_trainer, on_start=lambda: started.append("first"))
    assert started == ["first"]
    assert len(refused) == 2 and f"process {os.getpid()} on host " in refused[0]
    assert refused[0].startswith(f"{run}: another `streamvol train` is writing here: ")
    assert "Wait for it, or choose another --name" in refused[0]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # the refused wrote none
    assert not (run / ".streamvol.lock").exists()


def test_validation_every_n_epochs_and_after_the_last(blob_shards, tmp_path, monkeypatch):
    """``val_every=3`` over 8 epochs validates epochs 3, 6 and 8: best.pt and early stopping's
    patience follow those alone (a training loss never competes with a validation metric),
    and the rows of the others carry no validation key."""
    scripted = iter([(0.6, 1.0), (0.8, 0.9), (0.7, 0.8)])
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=8, val_every=3, **FAST)
    trainer = Trainer(config, tmp_path / "every")
    calls = []

    def validate(progress=None):
        calls.append(trainer.epoch + 1)
        accuracy, loss = next(scripted)
        return {"val_loss": loss, "val_balanced_accuracy": accuracy}

    monkeypatch.setattr(trainer, "validate", validate)
    trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()]
    assert calls == [3, 6, 8] and [r["epoch"] for r in rows] == list(range(1, 9))
    assert [r["epoch"] for r in rows if "val_loss" in r] == [3, 6, 8]
    assert [r["epoch"] for r in rows if r.get("best")] == [3, 6]
    assert torch.load(tmp_path / "every" / "best.pt", weights_only=True)["epoch"] == 6
    assert trainer.stale == 1  # epoch 8's validation gained nothing; 7 was not validated
    stopping = replace(config, early_stopping=1)
    scripted = iter([(0.6, 1.0), (0.5, 0.9), (0.9, 0.8)])
    calls.clear()
    trainer = Trainer(stopping, tmp_path / "stops")
    monkeypatch.setattr(trainer, "validate", validate)
    report = trainer.fit()
    assert calls == [3, 6] and report["stopped_early"] and len(report["history"]) == 6
    with pytest.raises(ValueError, match="val_every=0: expected epochs >= 1"):
        replace(config, val_every=0)


def test_bad_options_name_the_parameter(blob_shards):
    from streamvol.errors import BadOption

    with pytest.raises(BadOption, match="optimizer='adam': expected one of adamw, sgd"):
        TrainConfig(shards=str(blob_shards), optimizer="adam")
    with pytest.raises(ValueError, match="epochs=0: expected >= 1"):
        TrainConfig(shards=str(blob_shards), epochs=0)
    with pytest.raises(BadOption, match=r"lr=0\.0: expected a positive learning rate") as err:
        TrainConfig(shards=str(blob_shards), lr=0.0)
    assert (err.value.name, err.value.value) == ("lr", 0.0)
    with pytest.raises(BadOption, match="loader_timeout=-1"):
        TrainConfig(shards=str(blob_shards), loader_timeout=-1)


def test_segmentation_run(tmp_path):
    from streamvol import synth
    from streamvol.shard import parse_config, shard

    data = synth.make("nuclei", tmp_path / "nuclei", n=6, size=(8, 16, 16))
    shards = tmp_path / "seg"
    shard(parse_config([data], plan="grid", crop="8,16,16", context=0, split="0.5,0.5"), shards)
    config = TrainConfig(
        shards=str(shards),
        model="unet3d",
        model_options={"depth": 2, "base_width": 4},
        epochs=1,
        **FAST,
    )
    report = Trainer(config, tmp_path / "seg-run").fit()
    assert 0.0 <= report["dice"] <= 1.0
    assert list(report["dice_per_class"]) == ["background", "foreground"]


def test_cli_train_and_evaluate(blob_shards, tmp_path):
    runner = CliRunner()
    args = [
        "train",
        str(blob_shards),
        "--model",
        "simple_cnn",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--augment",
        "flips",
        "--runs",
        str(tmp_path),
        "--name",
        "cli",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val:" in result.output and "balanced_accuracy" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "cli"), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "test:" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--resume" in again.output
    done = runner.invoke(app, [*args, "--resume"])  # a finished run: says so, trains nothing
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"{tmp_path / 'cli'}: its 2 epochs are done, nothing to resume")
    assert "epoch " not in done.output and "val:" in done.output


def test_mixup_and_cutmix_give_soft_targets(blob_shards, tmp_path):
    import numpy as np

    from streamvol.augment import Augment, Cutmix, Mixup, mix_batch
    from streamvol.train.loop import _mix
    from streamvol.train.setup import Task

    batch = {
        "image": torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 1, 2, 2, 2).clone(),
        "label": torch.tensor([0, 1, 1, 0]),
    }
    binary = Task("classification", ("a", "b"), (2, 2, 2), (2, 2))
    spec = Augment(mixup=Mixup(alpha=0.4))
    x, y = _mix(batch, spec, binary, np.random.default_rng(0))
    ref = mix_batch(spec, batch["image"], np.random.default_rng(0))  # the same draws
    lam, perm = ref["lam"], ref["perm"]
    assert torch.allclose(x, ref["image"])
    assert torch.allclose(
        y, lam * batch["label"].float() + (1 - lam) * batch["label"][perm].float()
    )
    three = Task("classification", ("a", "b", "c"), (2, 2, 2), (1, 1, 1))
    _, soft = _mix(batch, Augment(cutmix=Cutmix(alpha=1.0)), three, np.random.default_rng(1))
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))
    config = TrainConfig(
        shards=str(blob_shards), model="simple_cnn", epochs=1, mixup=0.4, cutmix=1.0, **FAST
    )
    report = Trainer(config, tmp_path / "mix").fit()
    assert np.isfinite(report["history"][0]["train_loss"])


def test_fine_tuning_freezes_then_unfreezes_feature_levels(blob_shards, tmp_path):
    base = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=1, **FAST)
    Trainer(base, tmp_path / "a").fit()
    start = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    pretrained = str(tmp_path / "a" / "best.pt")

    frozen = Trainer(replace(base, pretrained=pretrained, freeze_features=True), tmp_path / "b")
    frozen.fit()
    after = frozen.model.state_dict()
    features = [k for k in start if k.startswith("features.")]
    assert features and all(torch.equal(after[k], start[k]) for k in features)
    assert not torch.equal(after["head.weight"], start["head.weight"])

    gradual = Trainer(
        replace(base, epochs=2, pretrained=pretrained, unfreeze_every=1), tmp_path / "c"
    )
    gradual.fit()
    # the weights after epoch 2 (fit() ends holding the best epoch's, which may be epoch 1's)
    after = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["model"]
    levels = sorted({k.split(".")[1] for k in features}, key=int)
    first = [k for k in features if k.split(".")[1] == levels[0]]
    last = [k for k in features if k.split(".")[1] == levels[-1]]
    assert all(torch.equal(after[k], start[k]) for k in first)  # still frozen at epoch 2
    assert any(not torch.equal(after[k], start[k]) for k in last)  # unfrozen after epoch 1


# --- on CUDA (the ``gpu`` marker; skipped without it) -------------------------------------------


@pytest.mark.gpu
def test_bf16_autocast_steps_of_a_unet3d_stay_finite_on_cuda():
    """Under bf16 autocast a small U-Net's logits are bf16, and its loss and gradients finite,
    over a few optimizer steps that change the weights."""
    from streamvol.models import build

    torch.manual_seed(0)
    model = build("unet3d", num_classes=3, depth=2, base_width=8).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(4, 1, 32, 32, 32, device="cuda")
    target = torch.randint(0, 3, (4, 32, 32, 32), device="cuda")
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        assert logits.dtype == torch.bfloat16
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.gpu
def test_training_on_cuda_with_gpu_augmentation_and_bf16(tmp_path):
    """The whole loop on CUDA: 2 workers decode, DevicePrefetcher augments on its side stream,
    bf16 autocast (the default there); every epoch's loss is finite and the run resumes."""
    import math

    from streamvol import synth
    from streamvol.shard import parse_config, shard

    data = synth.make("nuclei", tmp_path / "nuclei", n=6, size=(16, 32, 32))
    shards = tmp_path / "seg"
    shard(parse_config([data], plan="grid", crop="16,16,16", split="0.5,0.5"), shards)
    config = TrainConfig(
        shards=str(shards),
        model="unet3d",
        model_options={"depth": 2, "base_width": 8},
        epochs=2,
        batch_size=4,
        workers=2,
        lr=3e-3,
        warmup=0,
        augment="default",
        augment_device="gpu",
        device="cuda",
    )
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.device.type == "cuda" and trainer.amp == torch.bfloat16
    report = trainer.fit()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["train_loss"] for line in lines]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert 0.0 <= report["dice"] <= 1.0


def test_fit_keeps_the_callers_torch_threads_beside_loader_workers(blob_shards, tmp_path):
    """Training and validation run at the caller's torch thread count with loader workers: a
    thread left to each worker halved a model-bound run on 2 cores (se_resnet3d, 48^3 crops:
    1.1 against 2.25 samples/s), where the idle workers gave nothing back."""
    config = TrainConfig(shards=str(blob_shards), model="simple_cnn", epochs=1, **FAST)
    before = torch.get_num_threads()
    seen = set()

    def note(done: int, total: int) -> None:
        seen.add(torch.get_num_threads())

    try:
        torch.set_num_threads(3)
        trainer = Trainer(replace(config, workers=2), tmp_path / "r")
        trainer.fit(progress=note, val_progress=note)
        assert seen == {3} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
