"""simple_cnn: the zms2 spot classifier."""

from __future__ import annotations

import pytest
import torch

from streamvol import models


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_binary_has_exactly_17957_parameters() -> None:
    assert _count(models.build("simple_cnn", num_classes=2)) == 17_957


def test_multiclass_only_widens_the_head() -> None:
    assert _count(models.build("simple_cnn", num_classes=4)) == 17_957 - 513 + 4 * 513


def test_pooled_map_is_32_features() -> None:
    model = models.build("simple_cnn", num_classes=2)
    assert model.features(torch.randn(1, 1, 9, 11, 11)).shape == (1, 4, 2, 2, 2)
    assert model.classifier[1].in_features == 32


def test_other_input_shape() -> None:
    model = models.build("simple_cnn", num_classes=3, input_shape=(16, 16, 16))
    assert model(torch.randn(2, 1, 16, 16, 16)).shape == (2, 3)


def test_wrong_spatial_size_raises() -> None:
    model = models.build("simple_cnn", num_classes=2)
    with pytest.raises(ValueError, match=r"simple_cnn: built for inputs pooling to \(2, 2, 2\)"):
        model(torch.randn(2, 1, 16, 16, 16))


def test_too_small_input_shape_raises() -> None:
    with pytest.raises(ValueError, match="too small"):
        models.build("simple_cnn", num_classes=2, input_shape=(3, 11, 11))
