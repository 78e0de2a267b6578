"""se_resnet3d: the exact parameter count and its parts."""

from __future__ import annotations

import pytest
import torch

from streamvol import models


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_binary_has_exactly_900001_parameters() -> None:
    assert _count(models.build("se_resnet3d", num_classes=2)) == 900_001


def test_parameter_breakdown() -> None:
    # The derivation in the SEResNet3D docstring, part by part.
    model = models.build("se_resnet3d", num_classes=2)
    stem, b1, b2, b3 = model.features
    assert _count(stem) == 928
    assert _count(b1) == 55_552
    assert _count(b2) == 168_832
    assert _count(b3) == 674_560
    assert _count(b3.se) == 2 * 128 * 8
    assert _count(model.head) == 129


def test_global_pool_accepts_other_sizes() -> None:
    model = models.build("se_resnet3d", num_classes=3, widths=(4, 8, 8))
    assert model(torch.randn(2, 1, 9, 11, 11)).shape == (2, 3)


def test_too_small_input_raises() -> None:
    model = models.build("se_resnet3d", num_classes=2, widths=(4, 8, 8))
    with pytest.raises(ValueError, match="every spatial side >= 4"):
        model(torch.randn(2, 1, 3, 8, 8))
