"""A run killed at any batch and resumed ends with bit-identical weights, with loader workers;
``train`` and ``cv`` on trainer-sized crops with the default two workers finish."""

from __future__ import annotations

import json
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

from ..guard import run_guarded

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


@pytest.mark.parametrize("every", [0, 3])
def test_kill_and_resume_with_workers_gives_the_same_weights(blob_shards, tmp_path, every):
    """Two workers, dropout (simple_cnn), MixUp, a crash at step 5 of epoch 2: resumed from the
    last checkpoint (the end of epoch 1, or step 3 of epoch 2, when the next batch is worker
    1's), the run ends with the uninterrupted run's weights, bit for bit."""
    config = TrainConfig(
        shards=str(blob_shards),
        model="simple_cnn",
        epochs=3,
        batch_size=4,
        lr=3e-3,
        augment="flips",
        warmup=0,
        mixup=0.4,
        workers=2,
        checkpoint_every=every,
    )
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
    whole = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in whole] == [h["train_loss"] for h in again]


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


def test_cli_train_killed_mid_epoch_resumes_to_the_same_weights(big_crops, tmp_path):
    """The real CLI with its default two workers and a validation split, SIGKILLed (with its
    workers) once it has checkpointed inside epoch 2, then ``--resume``d: same final weights
    as an uninterrupted run."""
    common = [*TRAIN, "--epochs", "3", "--checkpoint-every", "1", "--runs", tmp_path]
    done = run_guarded(_cli("train", big_crops["splits"], *common, "--name", "whole"), limit=300)
    assert done.returncode == 0, done.stdout
    proc = subprocess.Popen(
        _cli("train", big_crops["splits"], *common, "--name", "cut"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = run_guarded(
        _cli("train", big_crops["splits"], *common, "--name", "cut", "--resume"), limit=300
    )
    assert resumed.returncode == 0, resumed.stdout
    assert _same(_weights(tmp_path / "whole" / "last.pt"), _weights(last))


def test_cli_cv_on_trainer_sized_crops_finishes(big_crops, tmp_path):
    done = run_guarded(
        _cli("cv", big_crops["folds"], "--model", "simple_cnn", "--epochs", "1",
             "--batch-size", "4", "--augment", "flips", "--runs", tmp_path, "--name", "cv"),
        limit=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    report = json.loads((tmp_path / "cv" / "cv_report.json").read_text())
    assert report["folds"] == 2
