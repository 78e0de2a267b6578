"""A light decoder that turns any classifier's feature levels into a per-voxel output.

The classifiers (``simple_cnn``, ``se_resnet3d``, ``vgg3d``, ``resnet3d``) keep their levels in
``model.features``; built with ``task="segment"`` they run those levels, keep each one's output,
and decode them FPN-style: every level's map is projected to ``width`` channels (1x1x1 conv) and
added to the sum from the deeper levels, upsampled (trilinear) to exactly that level's size,
then smoothed by one 3x3x3 conv and ReLU; the shallowest result is upsampled to the input's size.
Sizes are matched exactly at every step, so any crop the encoder takes (odd sides too) gives an
output of the input's size. The same form, with one output channel, is the autoencoder that
``streamvol pretrain`` trains: every weight of ``features`` then transfers to the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvol.errors import BadOption
from streamvol.models._common import segmentation_outputs


def level_maps(features: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every level of ``features``, shallowest first."""
    maps = []
    for level in features:
        x = level(x)
        maps.append(x)
    return maps


def level_channels(features: nn.Sequential, in_channels: int) -> list[int]:
    """Output channels of every level, from the last ``Conv3d`` (or norm) each one holds."""
    channels, c = [], in_channels
    for level in features:
        for m in level.modules():
            if isinstance(m, nn.Conv3d):
                c = m.out_channels
        channels.append(c)
    return channels


class LightDecoder(nn.Module):
    """Feature maps (shallowest first, channels ``channels``) -> ``(B, width, *size)``."""

    def __init__(self, channels: Sequence[int], width: int) -> None:
        super().__init__()
        if width < 1:
            raise BadOption("decoder_width", width, "expected >= 1")
        self.lateral = nn.ModuleList(nn.Conv3d(c, width, 1) for c in channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv3d(width, width, 3, padding=1), nn.ReLU()) for _ in channels
        )

    def forward(self, maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        y: torch.Tensor | None = None
        for i in reversed(range(len(maps))):
            z = self.lateral[i](maps[i])
            if y is not None:
                z = z + _resize(y, z.shape[2:])
            y = self.smooth[i](z)
        assert y is not None  # at least one level, checked by the models
        return _resize(y, size)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def add_segmenter(model: nn.Module, in_channels: int, num_classes: int, width: int) -> None:
    """Give a classifier built on ``model.features`` its per-voxel form: ``decoder`` over every
    level, a 1x1x1 ``head`` and ``num_outputs`` (run it with ``segment``)."""
    model.num_outputs = segmentation_outputs(num_classes)
    model.decoder = LightDecoder(level_channels(model.features, in_channels), width)
    model.head = nn.Conv3d(width, model.num_outputs, 1)


def segment(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The per-voxel output of a model given ``add_segmenter``, of ``x``'s spatial size."""
    return model.head(model.decoder(level_maps(model.features, x), x.shape[2:]))


def check_task(task: str, model: str) -> None:
    if task not in ("classify", "segment"):
        raise BadOption("task", task, f"expected 'classify' or 'segment' ({model})")
