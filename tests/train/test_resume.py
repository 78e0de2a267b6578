"""A run killed at any batch and resumed ends with bit-identical weights, with loader workers;
``train`` and ``cv`` on trainer-sized crops with the default two workers finish."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from streamvol.shard import parse_config, shard
from streamvol.train import TrainConfig, Trainer

from ..guard import default_threads, run_guarded

CROP = "24,48,48"


class Crash(Exception):
    """Stands for a kill at a given step."""


def _crash_at(epoch_index: int, step: int, trainer_box: list):
    def progress(done: int, total: int) -> None:
        if trainer_box[0].epoch == epoch_index and done == step:
            raise Crash(f"killed after step {done} of epoch {epoch_index + 1}")

    return progress


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(run, key):
    """``key`` of every epoch in the run's metrics.jsonl."""
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _config(shards, **options):
    """Two loader workers, flips, batches of 4, no warmup: a run whose resume can drift."""
    common = dict(batch_size=4, lr=3e-3, augment="flips", warmup=0, workers=2)
    return TrainConfig(shards=str(shards), **{**common, **options})


@pytest.mark.parametrize("every", [0, 3])
def test_kill_and_resume_with_workers_gives_the_same_weights(blob_shards, tmp_path, every):
    """Two workers, dropout (simple_cnn), MixUp, a crash at step 5 of epoch 2: resumed from the
    last checkpoint (the end of epoch 1, or step 3 of epoch 2, when the next batch is worker
    1's), the run ends with the uninterrupted run's weights, bit for bit."""
    config = _config(blob_shards, model="simple_cnn", epochs=3, mixup=0.4, checkpoint_every=every)
    Trainer(config, tmp_path / "whole").fit()
    cut = Trainer(config, tmp_path / "cut")
    with pytest.raises(Crash):
        cut.fit(progress=_crash_at(1, 5, [cut]))
    del cut
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and (saved["partial"] or {}).get("step") == (every or None)
    resumed = Trainer(replace(config, checkpoint_every=0), tmp_path / "cut", resume=True)
    resumed.fit()
    assert _same(_weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt"))
    assert _history(tmp_path / "whole", "train_loss") == _history(tmp_path / "cut", "train_loss")


def _stop_in(where: str, trainer: Trainer, at: int = 3) -> None:
    """Ctrl-C inside epoch 2 of ``trainer``, at its ``at``-th training ``forward`` (after the
    pass moved batch-norm statistics and drew dropout) or ``update`` (SIGINT raised from the
    optimizer's step, half way through the update), or its ``at``-th validation batch."""
    calls = [0]

    def count() -> bool:
        calls[0] += trainer.epoch == 1
        return trainer.epoch == 1 and calls[0] == at

    def forward_hook(module, args, output):
        if (module.training == (where == "forward")) and count():
            raise KeyboardInterrupt

    def step_hook(optimizer, args, kwargs):
        if count():
            signal.raise_signal(signal.SIGINT)

    if where == "update":
        trainer.optimizer.register_step_post_hook(step_hook)
    else:
        trainer.model.register_forward_hook(forward_hook)


@pytest.mark.parametrize("where", ["forward", "update", "validating"])
def test_stopped_inside_an_epoch_keeps_its_finished_steps(blob_shards, tmp_path, where):
    """Ctrl-C inside epoch 2, with batch norm, dropout and two workers: ``last.pt`` holds the
    steps that finished (the step under way undone; one stopped during its update, finished
    first), its loader workers are stopped, and the resumed run ends with the uninterrupted
    run's weights and losses."""
    config = _config(blob_shards, model="se_resnet3d", model_options={"widths": [4, 8]}, epochs=2)
    Trainer(config, tmp_path / "whole").fit()
    cut = Trainer(config, tmp_path / "cut")
    _stop_in(where, cut)
    before = set(multiprocessing.active_children())
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert not [p for p in multiprocessing.active_children() if p not in before]  # workers
    steps = cut.steps_per_epoch
    del cut
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    kept = {"forward": 2, "update": 3, "validating": steps}[where]
    assert saved["epoch"] == 1 and saved["partial"]["step"] == kept
    Trainer(config, tmp_path / "cut", resume=True).fit()
    assert _same(_weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt"))
    for key in ("train_loss", "val_loss"):
        assert _history(tmp_path / "whole", key) == _history(tmp_path / "cut", key)


@pytest.fixture(scope="module")
def big_crops(tmp_path_factory):
    """Trainer-sized crops (24 x 48 x 48) of two classes, as split shards and as 2 folds."""
    root = tmp_path_factory.mktemp("bigcrops")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    shape = tuple(int(c) for c in CROP.split(","))
    zz, yy, xx = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    blob = np.exp(-(zz**2 + (yy / 2) ** 2 + (xx / 2) ** 2) / 8.0)
    rows = ["sample,class"]
    for i in range(32):
        label = "blob" if i % 2 else "flat"
        image = rng.normal(0, 0.3, shape) + (2.0 * blob if label == "blob" else 0.0)
        np.save(src / f"s{i:03d}.npy", image.astype(np.float32))
        rows.append(f"s{i:03d},{label}")
    (src / "classes.csv").write_text("\n".join(rows) + "\n")
    splits, folds = root / "splits", root / "folds"
    shard(parse_config([src], plan="sample", crop=CROP, context=0, split="0.5,0.25,0.25"), splits)
    shard(parse_config([src], plan="sample", crop=CROP, context=0, folds=2), folds)
    return {"splits": splits, "folds": folds}


def _cli(*args):
    return [sys.executable, "-m", "streamvol.cli", *map(str, args)]


TRAIN = ["--model", "simple_cnn", "--batch-size", "4", "--augment", "flips", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def whole_cli_run(big_crops, tmp_path_factory):
    """The uninterrupted CLI run the killed ones are compared with: its runs folder."""
    runs = tmp_path_factory.mktemp("runs")
    common = [*TRAIN, "--epochs", "3", "--checkpoint-every", "1", "--runs", runs]
    done = run_guarded(_cli("train", big_crops["splits"], *common, "--name", "whole"), limit=300)
    assert done.returncode == 0, done.stdout
    return runs


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_cli_train_killed_mid_epoch_resumes_to_the_same_weights(
    big_crops, whole_cli_run, tmp_path, sig
):
    """The real CLI with its default two workers and a validation split, killed with its
    workers (a process group's SIGKILL, or SIGTERM, as ``kill``, ``timeout`` or a batch
    scheduler sends it) once it has checkpointed inside epoch 2, then ``--resume``d: same
    final weights as an uninterrupted run. SIGTERM stops it as Ctrl-C does: exit code 143,
    how to go on, the run folder's lock released."""
    common = [*TRAIN, "--epochs", "3", "--checkpoint-every", "1", "--runs", tmp_path]
    proc = subprocess.Popen(
        _cli("train", big_crops["splits"], *common, "--name", "cut"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    last = tmp_path / "cut" / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                state = torch.load(last, weights_only=True)
                if state["epoch"] == 1 and state["partial"] is not None:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed inside epoch 2"
    finally:
        os.killpg(proc.pid, sig)
        output, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, output
        assert "terminated; the same command with --resume continues" in output
        assert "Traceback" not in output
        assert not (tmp_path / "cut" / ".streamvol.lock").exists()
    resumed = run_guarded(
        _cli("train", big_crops["splits"], *common, "--name", "cut", "--resume"), limit=300
    )
    assert resumed.returncode == 0, resumed.stdout
    assert _same(_weights(whole_cli_run / "whole" / "last.pt"), _weights(last))


def test_cli_cv_on_trainer_sized_crops_finishes(big_crops, tmp_path):
    """The hang of issue 12 as users met it: the CLI at torch's default threads (an OpenMP pool
    busy when the loader forks its default two workers), trainer-sized crops."""
    done = run_guarded(
        _cli("cv", big_crops["folds"], "--model", "simple_cnn", "--epochs", "1",
             "--batch-size", "4", "--augment", "flips", "--runs", tmp_path, "--name", "cv"),
        limit=300,
        env=default_threads(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    report = json.loads((tmp_path / "cv" / "cv_report.json").read_text())
    assert report["folds"] == 2
