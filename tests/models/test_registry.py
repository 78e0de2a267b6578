"""The registry: names, options, errors."""

from __future__ import annotations

import pytest

from streamvol import models


def test_available_lists_every_model_sorted() -> None:
    names = models.available()
    assert names == tuple(sorted(names))
    assert set(names) == {"simple_cnn", "se_resnet3d", "vgg3d", "resnet3d", "unet3d", "vit3d"}


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as err:
        models.build("resnet50", num_classes=2)
    for name in models.available():
        assert name in str(err.value)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['widht'\]") as err:
        models.build("unet3d", num_classes=2, widht=8)
    assert "base_width" in str(err.value)


def test_num_classes_is_required_and_checked() -> None:
    with pytest.raises(TypeError):
        models.build("simple_cnn")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="num_classes"):
        models.build("simple_cnn", num_classes=0)


def test_options_report_defaults() -> None:
    opts = models.options("unet3d")
    assert opts["depth"] == 3 and opts["norm"] == "batch"
    assert "in_channels" not in opts and "num_classes" not in opts


def test_output_convention() -> None:
    assert models.classifier_outputs(2) == 1
    assert models.classifier_outputs(1) == 1
    assert models.classifier_outputs(5) == 5
    assert models.segmentation_outputs(2) == 2
