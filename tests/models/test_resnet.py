"""resnet3d: r3d_18 and r2plus1d_18, layer for layer as torchvision."""

from __future__ import annotations

import pytest
import torch

from streamvol import models


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("variant", "expected"),
    # torchvision.models.video.{r3d_18, r2plus1d_18}: published parameter counts.
    [("3d", 33_371_472), ("2plus1d", 31_505_325)],
)
def test_matches_torchvision_parameter_counts(variant: str, expected: int) -> None:
    with torch.device("meta"):  # no memory, no init time
        model = models.build("resnet3d", in_channels=3, num_classes=400, variant=variant)
    assert _count(model) == expected


def test_one_channel_stem() -> None:
    with torch.device("meta"):
        model = models.build("resnet3d", num_classes=2)
    assert model.features[0][0].in_channels == 1


def test_unknown_variant_raises() -> None:
    with pytest.raises(ValueError, match="variant must be '3d' or '2plus1d'"):
        models.build("resnet3d", num_classes=2, variant="2d")
