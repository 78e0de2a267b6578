"""vit3d: tokens, pooling, segmentation head, shape errors."""

from __future__ import annotations

import pytest
import torch

from streamvol import models
from streamvol.errors import BadOption

SMALL = {"dim": 16, "depth": 1, "heads": 2}


@pytest.mark.parametrize("patch_size", [6, 8])
def test_token_count(patch_size: int) -> None:
    model = models.build("vit3d", num_classes=2, input_shape=(24, 24, 48), patch_size=patch_size)
    grid = (24 // patch_size) * (24 // patch_size) * (48 // patch_size)
    assert model.pos_embed.shape == (1, grid + 1, 192)  # + CLS token


def test_mean_pool_has_no_cls_token() -> None:
    model = models.build("vit3d", num_classes=4, input_shape=(16, 16, 16), pool="mean", **SMALL)
    assert model.cls_token is None and model.pos_embed.shape[1] == 8
    assert model(torch.randn(2, 1, 16, 16, 16)).shape == (2, 4)


def test_segment_head_returns_voxels() -> None:
    model = models.build("vit3d", num_classes=3, input_shape=(16, 8, 16), task="segment", **SMALL)
    assert model(torch.randn(2, 1, 16, 8, 16)).shape == (2, 3, 16, 8, 16)


def test_input_must_match_input_shape() -> None:
    model = models.build("vit3d", num_classes=2, input_shape=(16, 16, 16), **SMALL)
    with pytest.raises(ValueError, match=r"built for \(B, C, 16, 16, 16\)"):
        model(torch.randn(2, 1, 8, 16, 16))


def test_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match="divisible by patch_size 8"):
        models.build("vit3d", num_classes=2, input_shape=(12, 16, 16))
    with pytest.raises(BadOption, match="dim=10: expected a multiple of heads=3"):
        models.build("vit3d", num_classes=2, input_shape=(16, 16, 16), dim=10, heads=3)
    with pytest.raises(BadOption, match="task='detect'"):
        models.build("vit3d", num_classes=2, task="detect")
