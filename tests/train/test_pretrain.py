"""Autoencoder pretraining on real shards: corruptions are keyed and as asked, the loop
reconstructs with falling loss into a full run folder, and its encoder loads into the
classifier that fine-tunes it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from streamvol.errors import BadOption
from streamvol.train import TrainConfig, Trainer
from streamvol.train.pretrain import corrupt

FAST = {"batch_size": 8, "workers": 0, "lr": 3e-3, "augment": "flips", "warmup": 0}


def test_corruption_is_keyed_and_blanks_the_asked_fraction_of_blocks():
    x = torch.ones(4, 1, 16, 16, 16)
    assert corrupt(x, noise=0, mask_ratio=0, mask_block=4, rng=np.random.default_rng(0)) is x
    a = corrupt(x, noise=0.1, mask_ratio=0.5, mask_block=4, rng=np.random.default_rng(7))
    b = corrupt(x, noise=0.1, mask_ratio=0.5, mask_block=4, rng=np.random.default_rng(7))
    assert torch.equal(a, b)
    masked = corrupt(x, noise=0, mask_ratio=0.5, mask_block=4, rng=np.random.default_rng(1))
    blocks = masked.view(4, 1, 4, 4, 4, 4, 4, 4).permute(0, 1, 2, 4, 6, 3, 5, 7)
    per_block = blocks.reshape(4, 64, 64)
    assert set(per_block.amax(-1).unique().tolist()) <= {0.0, 1.0}  # whole blocks, never parts
    assert torch.equal(per_block.amax(-1), per_block.amin(-1))
    assert 0.35 < float((per_block.amax(-1) == 0).float().mean()) < 0.65


def test_pretraining_reconstructs_and_its_encoder_fine_tunes(blob_shards, tmp_path):
    config = TrainConfig(
        shards=str(blob_shards),
        model="simple_cnn",
        task="reconstruction",
        epochs=4,
        noise=0.2,
        mask_ratio=0.2,
        mask_block=3,
        **FAST,
    )
    report = Trainer(config, tmp_path / "ae").fit()
    run = tmp_path / "ae"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "val_reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["val_loss"] < lines[0]["val_loss"]
    assert report["task"] == "reconstruction" and report["r2"] > lines[0]["val_r2"]
    assert json.loads((run / "config.json").read_text())["noise"] == 0.2

    ae = torch.load(run / "best.pt", weights_only=True)["model"]
    tune = TrainConfig(
        shards=str(blob_shards),
        model="simple_cnn",
        epochs=2,
        pretrained=str(run / "best.pt"),
        unfreeze_every=1,
        **FAST,
    )
    trainer = Trainer(tune, tmp_path / "tuned")
    assert trainer.transferred["loaded"] == 4  # the two conv levels' weights and biases
    assert set(trainer.transferred["new"]) == {"classifier", "head"}
    state = trainer.model.state_dict()
    for key in ("features.0.0.weight", "features.1.0.bias"):
        assert torch.equal(state[key], ae[key])
    trainer.fit()
    text = (tmp_path / "tuned" / "metrics.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(x["trainable_levels"], x["feature_levels"]) for x in lines] == [(0, 2), (1, 2)]


def test_a_checkpoint_of_another_model_is_refused_before_the_run_folder(blob_shards, tmp_path):
    from streamvol import models

    torch.save({"model": models.build("unet3d", num_classes=1, depth=1, base_width=4).state_dict()},
               tmp_path / "unet.pt")  # fmt: skip
    config = TrainConfig(
        shards=str(blob_shards), model="simple_cnn", pretrained=str(tmp_path / "unet.pt"), **FAST
    )
    with pytest.raises(BadOption, match=r"pretrained=.*no tensor of it fits"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(BadOption, match=r"model='unet3d'.*classifiers: resnet3d, se_resnet3d"):
        Trainer(replace(config, pretrained=None, model="unet3d"), tmp_path / "run2")
