"""vgg3d: classifier sizing from the input shape, reduced classifier."""

from __future__ import annotations

import pytest
import torch

from streamvol import models
from streamvol.errors import BadOption

SMALL = {"convs_per_level": (1, 1, 2), "base_width": 4}


def test_classifier_input_computed_from_input_shape() -> None:
    model = models.build("vgg3d", num_classes=2, input_shape=(16, 24, 32), **SMALL)
    # 3 levels: (16, 24, 32) // 8 = (2, 3, 4); last level has 4 * 2**2 = 16 maps.
    assert model.classifier[1].in_features == 16 * 2 * 3 * 4
    assert model.classifier[1].out_features == 4096
    assert model.classifier[4].out_features == 4096
    assert model.head.in_features == 4096


def test_widths_double_and_cap() -> None:
    model = models.build(
        "vgg3d", num_classes=2, convs_per_level=(1, 1, 1, 1), base_width=8, max_width=32
    )
    widths = [level[0].out_channels for level in model.features]
    assert widths == [8, 16, 32, 32]


def test_full_classifier_rejects_other_shapes() -> None:
    model = models.build("vgg3d", num_classes=2, input_shape=(16, 16, 16), hidden=8, **SMALL)
    with pytest.raises(ValueError, match=r"pooling to \(2, 2, 2\)"):
        model(torch.randn(2, 1, 32, 16, 16))


def test_reduced_classifier_accepts_any_big_enough_shape() -> None:
    model = models.build("vgg3d", num_classes=5, classifier="reduced", **SMALL)
    assert model.head.in_features == 256
    assert model(torch.randn(2, 1, 8, 16, 24)).shape == (2, 5)
    with pytest.raises(ValueError, match="every spatial side >= 8"):
        model(torch.randn(2, 1, 4, 16, 24))


def test_bad_options_raise() -> None:
    with pytest.raises(BadOption, match="too small for 3 levels"):
        models.build("vgg3d", num_classes=2, input_shape=(4, 16, 16), **SMALL)
    with pytest.raises(BadOption, match="classifier='tiny'"):
        models.build("vgg3d", num_classes=2, classifier="tiny")
