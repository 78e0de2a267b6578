"""resnet3d: r3d_18, r2plus1d_18 and mc3_18, layer for layer as torchvision; norms."""

from __future__ import annotations

import pytest
import torch

from streamvol import models
from streamvol.errors import BadOption


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("variant", "expected"),
    # torchvision.models.video.{r3d_18, r2plus1d_18, mc3_18}: published parameter counts.
    [("r3d_18", 33_371_472), ("r2plus1d_18", 31_505_325), ("mc3_18", 11_695_440)],
)
def test_matches_torchvision_parameter_counts(variant: str, expected: int) -> None:
    with torch.device("meta"):  # no memory, no init time
        model = models.build("resnet3d", in_channels=3, num_classes=400, variant=variant)
    assert _count(model) == expected


@pytest.mark.parametrize(("alias", "name"), [("3d", "r3d_18"), ("2plus1d", "r2plus1d_18")])
def test_old_variant_names_still_build(alias: str, name: str) -> None:
    with torch.device("meta"):
        assert models.build("resnet3d", num_classes=2, variant=alias).variant == name


def test_mc3_convolves_z_in_the_first_stage_only() -> None:
    model = models.build("resnet3d", num_classes=2, variant="mc3_18", width=4)
    first = model.features[1][0].conv1[0]
    later = model.features[2][0].conv1[0]
    assert first.kernel_size == (3, 3, 3)
    assert later.kernel_size == (1, 3, 3) and later.stride == (1, 2, 2)
    # z is never strided after the stem's stride 1: 5 z slices stay 5 through the stages
    maps = [m.shape[2] for m in _levels(model, torch.randn(1, 1, 5, 32, 32))]
    assert maps == [5, 5, 5, 5, 5]


def _levels(model, x):
    out = []
    for level in model.features:
        x = level(x)
        out.append(x)
    return out


@pytest.mark.parametrize("norm", ["batch", "group", "instance"])
def test_norms(norm: str) -> None:
    model = models.build("resnet3d", num_classes=3, width=8, norm=norm)
    kinds = {
        "batch": torch.nn.BatchNorm3d,
        "group": torch.nn.GroupNorm,
        "instance": torch.nn.InstanceNorm3d,
    }
    assert any(isinstance(m, kinds[norm]) for m in model.modules())
    others = set(kinds.values()) - {kinds[norm]}
    assert not any(isinstance(m, tuple(others)) for m in model.modules())
    assert model(torch.randn(2, 1, 16, 32, 32)).shape == (2, 3)


def test_one_channel_stem() -> None:
    with torch.device("meta"):
        model = models.build("resnet3d", num_classes=2)
    assert model.features[0][0].in_channels == 1


def test_unknown_variant_and_norm_raise() -> None:
    with pytest.raises(BadOption, match="variant='2d': expected one of r3d_18, r2plus1d_18"):
        models.build("resnet3d", num_classes=2, variant="2d")
    with pytest.raises(BadOption, match="norm='layer': expected one of batch, group, instance"):
        models.build("resnet3d", num_classes=2, norm="layer")
