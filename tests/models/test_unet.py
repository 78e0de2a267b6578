"""unet3d: size contract and norm options."""

from __future__ import annotations

import pytest
import torch

from streamvol import models
from streamvol.errors import BadOption


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_norms_keep_the_spatial_size(norm: str) -> None:
    model = models.build("unet3d", num_classes=2, depth=2, base_width=4, norm=norm)
    x = torch.randn(2, 1, 8, 16, 12)
    assert model(x).shape == (2, 2, 8, 16, 12)


def test_sizes_not_divisible_by_2_pow_depth_raise() -> None:
    model = models.build("unet3d", num_classes=1, depth=3, base_width=4)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8, got \(1, 1, 8, 12, 8\)"):
        model(torch.randn(1, 1, 8, 12, 8))


def test_instance_norm_needs_more_than_one_deepest_voxel() -> None:
    model = models.build("unet3d", num_classes=1, depth=2, base_width=4, norm="instance")
    with pytest.raises(ValueError, match="instance norm"):
        model(torch.randn(2, 1, 4, 4, 4))


def test_bad_options_raise() -> None:
    with pytest.raises(BadOption, match="norm='layer'"):
        models.build("unet3d", num_classes=1, norm="layer")
    with pytest.raises(BadOption, match="depth=0: expected depth >= 1"):
        models.build("unet3d", num_classes=1, depth=0)
