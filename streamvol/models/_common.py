"""Contracts every model shares: the input check, the output-count convention, the head swap.

Every model exposes its last layer as ``model.head`` (an ``nn.Linear`` for classifiers, a
1x1x1 ``nn.Conv3d`` for segmentation) and its output count as ``model.num_outputs``, so one
function can swap the head of any of them.
"""

from __future__ import annotations

import torch
from torch import nn

from streamvol.errors import BadInput, BadOption


def check_input(x: torch.Tensor, in_channels: int, model: str) -> None:
    """Raise ``BadInput`` unless ``x`` is ``(B, in_channels, D, H, W)``."""
    if x.ndim != 5:
        raise BadInput(f"{model}: expected (B, C, D, H, W), got {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise BadInput(
            f"{model}: expected (B, C, D, H, W) with C={in_channels}, got {tuple(x.shape)}"
        )


def classifier_outputs(num_classes: int) -> int:
    """Outputs of a classifier for ``num_classes``: 2 -> 1 logit (BCE), k -> k logits (CE).

    ``num_classes=1`` gives one raw output (a score or regression target).
    """
    if num_classes < 1:
        raise BadOption("num_classes", num_classes, "expected an int >= 1")
    return 1 if num_classes == 2 else num_classes


def segmentation_outputs(num_classes: int) -> int:
    """Channels per voxel of a segmentation model: exactly ``num_classes`` (1 for BCE/heatmap)."""
    if num_classes < 1:
        raise BadOption("num_classes", num_classes, "expected an int >= 1")
    return num_classes


def set_output_layer(model: nn.Module, num_outputs: int) -> nn.Module:
    """Replace ``model.head`` by a freshly initialised layer with ``num_outputs`` outputs.

    Everything before the head keeps its weights, so an encoder pre-trained (for instance as an
    autoencoder) can be fine-tuned for a new task. ``num_outputs`` is the raw count: for a
    classifier of k classes pass ``classifier_outputs(k)``. Returns ``model`` (changed in place).
    Swap before ``torch.compile`` / DDP wrapping, then wrap again.
    """
    if num_outputs < 1:
        raise BadOption("num_outputs", num_outputs, "expected an int >= 1")
    head = getattr(model, "head", None)
    new: nn.Module
    if isinstance(head, nn.Linear):
        new = nn.Linear(head.in_features, num_outputs, bias=head.bias is not None)
    elif isinstance(head, nn.Conv3d):
        new = nn.Conv3d(
            head.in_channels,
            num_outputs,
            head.kernel_size,
            stride=head.stride,
            padding=head.padding,
            bias=head.bias is not None,
        )
    else:
        raise TypeError(
            f"{type(model).__name__}: expected a `head` attribute that is nn.Linear or "
            f"nn.Conv3d, got {type(head).__name__}"
        )
    new = new.to(device=head.weight.device, dtype=head.weight.dtype)
    if head.weight.ndim == 5 and head.weight.is_contiguous(memory_format=torch.channels_last_3d):
        new = new.to(memory_format=torch.channels_last_3d)
    model.head = new
    model.num_outputs = num_outputs
    return model
