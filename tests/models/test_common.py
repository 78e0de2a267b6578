"""The head swap on its own: errors and layer properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamvol import models


def test_head_swap_needs_a_head() -> None:
    with pytest.raises(TypeError, match="head"):
        models.set_output_layer(nn.Sequential(nn.Linear(2, 2)), 3)


def test_head_swap_rejects_zero_outputs() -> None:
    model = models.build("simple_cnn", num_classes=2)
    with pytest.raises(ValueError, match="num_outputs"):
        models.set_output_layer(model, 0)


def test_new_head_is_trainable_and_keeps_memory_format() -> None:
    model = models.build("unet3d", num_classes=1, depth=1, base_width=4)
    model = model.to(memory_format=torch.channels_last_3d)
    model.head.requires_grad_(False)
    models.set_output_layer(model, 3)
    assert model.head.weight.requires_grad
    assert model.head.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert model(torch.randn(2, 1, 4, 4, 4)).shape == (2, 3, 4, 4, 4)


def test_autoencoder_to_segmenter() -> None:
    # Pre-train as an autoencoder (output = input channels), then fine-tune for 4 classes.
    model = models.build("unet3d", in_channels=2, num_classes=2, depth=1, base_width=4)
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    models.set_output_layer(model, 4)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, encoder[k])
    assert model(torch.randn(2, 2, 4, 4, 4)).shape == (2, 4, 4, 4, 4)
