"""The registry: names, options, errors."""

from __future__ import annotations

import pytest

from streamvol import models
from streamvol.errors import BadOption


def test_available_lists_every_model_sorted() -> None:
    names = models.available()
    assert names == tuple(sorted(names))
    assert set(names) == {"simple_cnn", "se_resnet3d", "vgg3d", "resnet3d", "unet3d", "vit3d"}
    from streamvol._cli_options import MODEL_NAMES

    assert names == MODEL_NAMES  # what `train --help` lists, without importing torch


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(BadOption, match="model='resnet50': expected one of") as err:
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


def test_describe_types_every_option_from_the_builder() -> None:
    options = {o.name: o for o in models.describe("resnet3d")}
    assert options["variant"].choices == ("r3d_18", "r2plus1d_18", "mc3_18")
    assert options["norm"].choices == ("batch", "group", "instance")
    assert options["width"].type == "int" and options["width"].default == 64
    assert options["layers"].type == "int,..."
    vgg = {o.name: o for o in models.describe("vgg3d")}
    assert vgg["classifier"].choices == ("full", "reduced")
    assert vgg["hidden"].type == "int | none"
    for name in models.available():
        assert models.describe(name) and models.summary(name)


def test_parse_options_types_values_and_names_mistakes() -> None:
    assert models.parse_options(
        "resnet3d", ["variant=mc3_18", "norm=group", "layers=1,1,1,1", "dropout=0.1"]
    ) == {"variant": "mc3_18", "norm": "group", "layers": (1, 1, 1, 1), "dropout": 0.1}
    assert models.parse_options("vgg3d", ["classifier=reduced", "hidden=none"]) == {
        "classifier": "reduced",
        "hidden": None,
    }
    assert models.parse_options("unet3d", ["base_width=8", "depth=2"]) == {
        "base_width": 8,
        "depth": 2,
    }
    assert models.parse_options("vit3d", ["patch_size=4"]) == {"patch_size": 4}
    with pytest.raises(ValueError, match="'variant=x': expected one of r3d_18, r2plus1d_18"):
        models.parse_options("resnet3d", ["variant=x"])
    with pytest.raises(ValueError, match=r"has no option 'widht'.*width"):
        models.parse_options("resnet3d", ["widht=3"])
    with pytest.raises(ValueError, match="'width': expected KEY=VALUE"):
        models.parse_options("resnet3d", ["width"])
    with pytest.raises(ValueError, match="'width=a': expected an integer"):
        models.parse_options("resnet3d", ["width=a"])
