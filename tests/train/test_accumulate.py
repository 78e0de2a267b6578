"""Gradient accumulation (``accumulate=N``): N batches make one update, the update of one batch
N times as large, and the schedule counts updates; a stop keeps whole groups, and the resumed
run ends bit for bit where the uninterrupted one does."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadOption
from streamvol.train import TrainConfig, Trainer

from .test_resume import _config, _history, _same, _stop_in, _weights

# no batch statistics, no dropout, no class weights: a batch's loss is the mean of its samples'
VIT = {
    "model": "vit3d",
    "model_options": {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2},
    "augment": "none",
    "class_weights": False,
    "workers": 0,
    "warmup": 0,
    "lr": 3e-3,
    "epochs": 2,
    "optimizer": "sgd",  # Adam would scale the rounding noise of gradients that are 0 (key bias)
}


def test_accumulated_batches_update_as_one_batch_as_large(cube_shards, tmp_path):
    """20 training crops: batches of 4 summed 4 at a time (groups of 4 and 1 batches) reach
    the weights of batches of 16 (then 4), the cosine schedule counting updates alike."""
    big = Trainer(TrainConfig(shards=str(cube_shards), batch_size=16, **VIT), tmp_path / "big")
    big.fit()
    small = TrainConfig(shards=str(cube_shards), batch_size=4, accumulate=4, **VIT)
    summed = Trainer(small, tmp_path / "summed")
    assert (big.steps_per_epoch, summed.steps_per_epoch) == (2, 5)
    updates = []
    summed.optimizer.register_step_post_hook(lambda *args: updates.append(summed.epoch))
    summed.fit()
    assert updates == [0, 0, 1, 1]  # one a group: 2 an epoch, as the large batches make
    assert summed.schedule.last_epoch == big.schedule.last_epoch == 4
    assert summed.optimizer.param_groups[0]["lr"] == pytest.approx(
        big.optimizer.param_groups[0]["lr"]
    )
    a, b = big.model.state_dict(), summed.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # and one batch at a time is not the same run
    one = Trainer(TrainConfig(shards=str(cube_shards), batch_size=4, **VIT), tmp_path / "one")
    one.fit()
    assert not all(torch.allclose(one.model.state_dict()[k], a[k], atol=1e-5) for k in a)


def test_a_stop_inside_a_group_keeps_the_groups_before_it(blob_shards, tmp_path):
    """Ctrl-C at the 4th forward pass of epoch 2 (batch 3, the second of the group 2-3):
    ``last.pt`` holds 2 batches, as no update followed batch 2; resumed, the run groups its
    batches as before and ends with the uninterrupted run's weights and losses."""
    config = _config(
        blob_shards, model="se_resnet3d", model_options={"widths": [4, 8]}, epochs=2, accumulate=2
    )
    Trainer(config, tmp_path / "whole").fit()
    cut = Trainer(config, tmp_path / "cut")
    _stop_in("forward", cut, at=4)
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    del cut
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"]["step"] == 2
    Trainer(config, tmp_path / "cut", resume=True).fit()
    assert _same(_weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt"))
    for key in ("train_loss", "val_loss"):
        assert _history(tmp_path / "whole", key) == _history(tmp_path / "cut", key)


def test_checkpoints_inside_an_epoch_follow_updates(blob_shards):
    with pytest.raises(BadOption, match=r"accumulate=0: expected >= 1"):
        TrainConfig(shards=str(blob_shards), accumulate=0)
    with pytest.raises(BadOption, match=r"checkpoint_every=3: expected a multiple of accumulate"):
        TrainConfig(shards=str(blob_shards), accumulate=2, checkpoint_every=3)
    TrainConfig(shards=str(blob_shards), accumulate=2, checkpoint_every=4)


def test_cli_says_how_often_it_updates(blob_shards, tmp_path):
    args = ["train", str(blob_shards), "--model", "simple_cnn", "--epochs", "1", "--batch-size",
            "4", "--accumulate", "3", "--workers", "0", "--augment", "flips",
            "--runs", str(tmp_path), "--name", "acc"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "6 batches of 4 an epoch (an update every 3 batches), 1 epoch," in done.output
    bad = CliRunner().invoke(app, [*args[:-1], "bad", "--checkpoint-every", "2"])
    assert bad.exit_code != 0
    assert "--checkpoint-every 2: expected a multiple of accumulate (3)" in bad.output
