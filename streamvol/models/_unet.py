"""``unet3d``: a 3D U-Net for masks and particle heatmaps."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from streamvol.errors import BadInput, BadOption
from streamvol.models._common import check_input, segmentation_outputs
from streamvol.models._registry import register

Norm = Literal["batch", "instance", "group"]


def _norm(kind: Norm, channels: int, num_groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.GroupNorm(math.gcd(num_groups, channels), channels)


class DoubleConv(nn.Module):
    """(conv3 + norm + ReLU) x 2, size preserving."""

    def __init__(self, cin: int, cout: int, norm: Norm, num_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False),
            _norm(norm, cout, num_groups),
            nn.ReLU(),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            _norm(norm, cout, num_groups),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


@register("unet3d")
class UNet3D(nn.Module):
    """U-Net: ``depth`` max-pool downsamplings with widths ``base_width * 2**level``, transposed-
    conv upsampling, skip concatenation, and a 1x1x1 conv head.

    Shapes: ``(B, in_channels, D, H, W) -> (B, num_classes, D, H, W)``: same spatial size as the
    input, which must have every side divisible by ``2**depth`` (else ``ValueError``). With
    ``norm="instance"`` the deepest map needs more than one voxel, so at least one side must be
    ``>= 2**(depth + 1)``. Output channels are logits, one per class (1 for a BCE mask or a
    particle heatmap). ``norm="group"`` uses ``gcd(num_groups, channels)`` groups.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        depth: int = 3,
        base_width: int = 32,
        norm: Norm = "batch",
        num_groups: int = 8,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "instance", "group"):
            raise BadOption("norm", norm, "expected 'batch', 'instance' or 'group' (unet3d)")
        if depth < 1:
            raise BadOption("depth", depth, "expected depth >= 1 (unet3d)")
        self.in_channels = in_channels
        self.num_outputs = segmentation_outputs(num_classes)
        self.depth = depth
        self.norm = norm
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([DoubleConv(in_channels, widths[0], norm, num_groups)])
        self.encoder.extend(
            DoubleConv(widths[i - 1], widths[i], norm, num_groups) for i in range(1, depth + 1)
        )
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth, 0, -1)
        )
        self.decoder = nn.ModuleList(
            DoubleConv(2 * widths[i - 1], widths[i - 1], norm, num_groups)
            for i in range(depth, 0, -1)
        )
        self.head = nn.Conv3d(widths[0], self.num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "unet3d")
        step = 2**self.depth
        if any(s % step for s in x.shape[2:]):
            raise BadInput(
                f"unet3d: expected D, H, W divisible by 2**depth = {step}, got {tuple(x.shape)}"
            )
        if self.norm == "instance" and max(x.shape[2:]) < 2 * step:
            raise BadInput(
                f"unet3d: instance norm needs a side >= {2 * step} at depth {self.depth}, "
                f"got {tuple(x.shape)}"
            )
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.decoder, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
