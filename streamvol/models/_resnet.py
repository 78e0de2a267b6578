"""``resnet3d``: torchvision's three 18-layer video ResNets for volumes, 1-channel stem.

Written here, following torchvision's ``VideoResNet`` layer for layer (no torchvision
dependency): with ``in_channels=3, num_classes=400`` the parameter counts equal torchvision's
``r3d_18`` (33,371,472), ``r2plus1d_18`` (31,505,325) and ``mc3_18`` (11,695,440).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from streamvol.errors import BadOption
from streamvol.models._common import check_input, classifier_outputs
from streamvol.models._decoder import add_segmenter, check_task, segment
from streamvol.models._registry import register

Variant = Literal["r3d_18", "r2plus1d_18", "mc3_18"]
Norm = Literal["batch", "group", "instance"]
VARIANTS: tuple[str, ...] = ("r3d_18", "r2plus1d_18", "mc3_18")
NORMS: tuple[str, ...] = ("batch", "group", "instance")
_ALIASES = {"3d": "r3d_18", "2plus1d": "r2plus1d_18", "mc3": "mc3_18"}
ConvKind = Literal["3d", "2plus1d", "2d"]


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _conv(kind: ConvKind, cin: int, cout: int, mid: int, stride: int, norm: Any) -> nn.Module:
    """3x3x3 conv; (2+1)D: 1x3x3 spatial conv, norm, ReLU, 3x1x1 conv along z; 2d: 1x3x3 only
    (torchvision's ``Conv3DNoTemporal``: z is neither convolved nor strided)."""
    if kind == "3d":
        return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
    if kind == "2d":
        return nn.Conv3d(
            cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
        )
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        norm(mid),
        nn.ReLU(),
        nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class BasicBlock3d(nn.Module):
    """conv-norm-ReLU-conv-norm plus shortcut, then ReLU; a 1x1x1 conv + norm shortcut when the
    shape changes (strided as the block's convs: not along z for ``2d``)."""

    def __init__(self, kind: ConvKind, cin: int, cout: int, stride: int, norm: Any) -> None:
        super().__init__()
        # (2+1)D: the middle width that keeps the parameter count of the full 3x3x3 conv.
        mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
        self.conv1 = nn.Sequential(_conv(kind, cin, cout, mid, stride, norm), norm(cout), nn.ReLU())
        self.conv2 = nn.Sequential(_conv(kind, cout, cout, mid, 1, norm), norm(cout))
        down = (1, stride, stride) if kind == "2d" else (stride,) * 3
        self.downsample: nn.Module = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv3d(cin, cout, 1, stride=down, bias=False), norm(cout))
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.downsample(x))


def _stem(variant: str, cin: int, width: int, norm: Any) -> nn.Sequential:
    if variant != "r2plus1d_18":
        return nn.Sequential(
            nn.Conv3d(cin, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            norm(width),
            nn.ReLU(),
        )
    mid = max(1, 45 * width // 64)  # torchvision's R2Plus1dStem uses 45 for width 64
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        norm(mid),
        nn.ReLU(),
        nn.Conv3d(mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
        norm(width),
        nn.ReLU(),
    )


def _stage_kinds(variant: str, stages: int) -> list[ConvKind]:
    if variant == "r3d_18":
        return ["3d"] * stages
    if variant == "r2plus1d_18":
        return ["2plus1d"] * stages
    return ["3d"] + ["2d"] * (stages - 1)  # mc3_18: 3D convs in the first stage only


@register("resnet3d")
class ResNet3D(nn.Module):
    """ResNet-18 for volumes: stem (stride 1x2x2), four stages of ``layers[i]`` basic blocks with
    ``width * 2**i`` channels (stride 2 from the second stage), global average pool, Linear.

    ``variant``: ``r3d_18`` (3x3x3 convs; ``"3d"`` also accepted), ``r2plus1d_18`` (every
    3x3x3 conv factorised into 1x3x3 and 3x1x1; ``"2plus1d"``), ``mc3_18`` (mixed: 3x3x3 in the
    first stage, 1x3x3 later, which neither convolve nor stride along z: suits crops with few z
    slices). ``norm``: ``batch`` (torchvision's), ``group`` (``gcd(num_groups, C)`` groups, for
    small batches) or ``instance``. ``width`` scales all channels (64 as in torchvision; smaller
    for small crops).

    Shapes: ``(B, in_channels, D, H, W) -> (B, num_outputs)``, any D, H, W >= 1. With
    ``task="segment"``: the same stages, the light decoder (``decoder_width`` channels) and a
    1x1x1 conv head, ``-> (B, num_classes, D, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        variant: Variant = "r3d_18",
        norm: Norm = "batch",
        num_groups: int = 8,
        layers: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        dropout: float = 0.0,
        task: Literal["classify", "segment"] = "classify",
        decoder_width: int = 32,
    ) -> None:
        super().__init__()
        variant = _ALIASES.get(variant, variant)  # type: ignore[assignment]
        if variant not in VARIANTS:
            raise BadOption("variant", variant, f"expected one of {', '.join(VARIANTS)} (resnet3d)")
        if norm not in NORMS:
            raise BadOption("norm", norm, f"expected one of {', '.join(NORMS)} (resnet3d)")
        check_task(task, "resnet3d")
        self.in_channels = in_channels
        self.variant = variant
        self.task = task

        def make_norm(c: int) -> nn.Module:
            return _norm(norm, c, num_groups)

        stages: list[nn.Module] = [_stem(variant, in_channels, width, make_norm)]
        cin = width
        for i, (n, kind) in enumerate(zip(layers, _stage_kinds(variant, len(layers)), strict=True)):
            cout = width * 2**i
            blocks = [BasicBlock3d(kind, cin, cout, 1 if i == 0 else 2, make_norm)]
            blocks += [BasicBlock3d(kind, cout, cout, 1, make_norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.features = nn.Sequential(*stages)
        self.head: nn.Module
        if task == "segment":
            add_segmenter(self, in_channels, num_classes, decoder_width)
        else:
            self.num_outputs = classifier_outputs(num_classes)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
            self.head = nn.Linear(cin, self.num_outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision's video ResNets.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d | nn.GroupNorm | nn.InstanceNorm3d):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "resnet3d")
        if self.task == "segment":
            return segment(self, x)
        return self.head(self.pool(self.features(x)))
