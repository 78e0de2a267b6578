"""Checkpoint loading (weights only), feature freezing and progressive unfreezing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from streamvol import models

VGG = {"input_shape": (16, 16, 16), "convs_per_level": (1, 1, 1), "base_width": 4, "hidden": 8}


class NotATensor:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_bare_state_dict(tmp_path: Path) -> None:
    src = models.build("vgg3d", num_classes=3, **VGG)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = models.build("vgg3d", num_classes=3, **VGG)
    assert not _same_weights(src, dst)
    result = models.load_weights(dst, tmp_path / "w.pt")
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert _same_weights(src, dst)


def test_trainer_checkpoint_and_compiled_prefix(tmp_path: Path) -> None:
    src = models.build("simple_cnn", num_classes=2)
    state = {f"_orig_mod.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": state, "epoch": 3, "metrics": {"loss": 0.5}}, tmp_path / "last.pt")
    dst = models.build("simple_cnn", num_classes=2)
    models.load_weights(dst, tmp_path / "last.pt")
    assert _same_weights(src, dst)


def test_named_entry(tmp_path: Path) -> None:
    src = models.build("simple_cnn", num_classes=2)
    torch.save({"model": {}, "ema": src.state_dict()}, tmp_path / "c.pt")
    dst = models.build("simple_cnn", num_classes=2)
    models.load_weights(dst, tmp_path / "c.pt", key="ema")
    assert _same_weights(src, dst)
    with pytest.raises(ValueError, match="expected an entry 'swa'"):
        models.load_weights(dst, tmp_path / "c.pt", key="swa")


def test_skip_head_for_a_new_task(tmp_path: Path) -> None:
    src = models.build("vgg3d", num_classes=2, **VGG)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = models.build("vgg3d", num_classes=6, **VGG)
    result = models.load_weights(dst, tmp_path / "w.pt", strict=False, skip_head=True)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"]
    assert torch.equal(dst.features[0][0].weight, src.features[0][0].weight)


def test_refuses_pickled_objects(tmp_path: Path) -> None:
    model = models.build("simple_cnn", num_classes=2)
    torch.save({"model": model.state_dict(), "extra": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        models.load_weights(model, tmp_path / "evil.pt")


def test_missing_file_and_wrong_content(tmp_path: Path) -> None:
    model = models.build("simple_cnn", num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        models.load_weights(model, tmp_path / "nope.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state_dict"):
        models.load_weights(model, tmp_path / "list.pt")
    torch.save({"epoch": 1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="'model'/'state_dict' entry"):
        models.load_weights(model, tmp_path / "meta.pt")


def _trainable_levels(model: torch.nn.Module) -> list[bool]:
    return [all(p.requires_grad for p in level.parameters()) for level in model.features]


def test_unfreeze_schedule_by_level() -> None:
    model = models.build("vgg3d", num_classes=2, **VGG)
    expected = {
        0: [False, False, False],
        1: [False, False, False],
        2: [False, False, True],
        5: [False, True, True],
        6: [True, True, True],
        100: [True, True, True],
    }
    for epoch, levels in expected.items():
        n = models.unfreeze_schedule(model, epoch, every=2)
        assert n == sum(levels)
        assert _trainable_levels(model) == levels, epoch
        assert all(p.requires_grad for p in model.classifier.parameters())
        assert all(p.requires_grad for p in model.head.parameters())


def test_frozen_levels_get_no_gradient() -> None:
    model = models.build("vgg3d", num_classes=2, **VGG)
    models.freeze_features(model, trainable_levels=1)
    model(torch.randn(2, 1, 16, 16, 16)).sum().backward()
    assert all(p.grad is None for p in model.features[0].parameters())
    assert all(p.grad is not None for p in model.features[2].parameters())
    assert model.head.weight.grad is not None


@pytest.mark.parametrize("name", ["simple_cnn", "se_resnet3d", "resnet3d"])
def test_other_classifiers_have_feature_levels(name: str) -> None:
    with torch.device("meta"):
        model = models.build(name, num_classes=2)
    assert models.freeze_features(model) == 0
    assert not any(p.requires_grad for p in model.features.parameters())


def test_schedule_errors() -> None:
    unet = models.build("unet3d", num_classes=1, depth=1, base_width=4)
    with pytest.raises(TypeError, match="features"):
        models.unfreeze_schedule(unet, 0, every=1)
    model = models.build("vgg3d", num_classes=2, **VGG)
    with pytest.raises(ValueError, match="every"):
        models.unfreeze_schedule(model, 0, every=0)
    with pytest.raises(ValueError, match="epoch"):
        models.unfreeze_schedule(model, -1, every=1)
