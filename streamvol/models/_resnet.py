"""``resnet3d``: r3d_18-style 3D ResNet and its (2+1)D variant (r2plus1d_18), 1-channel stem.

Written here, following torchvision's video ResNets layer for layer (no torchvision
dependency): with ``in_channels=3, num_classes=400`` the parameter counts equal torchvision's
``r3d_18`` (33,371,472) and ``r2plus1d_18`` (31,505,325).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from streamvol.models._common import check_input, classifier_outputs
from streamvol.models._registry import register

Variant = Literal["3d", "2plus1d"]


def _conv(variant: Variant, cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """3x3x3 conv, or its (2+1)D factorisation: 1x3x3 spatial conv, BN, ReLU, 3x1x1 temporal."""
    if variant == "3d":
        return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(),
        nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class BasicBlock3d(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU; 1x1x1 conv+BN shortcut when shape changes."""

    def __init__(self, variant: Variant, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        # (2+1)D: the middle width that keeps the parameter count of the full 3x3x3 conv.
        mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
        self.conv1 = nn.Sequential(
            _conv(variant, cin, cout, mid, stride), nn.BatchNorm3d(cout), nn.ReLU()
        )
        self.conv2 = nn.Sequential(_conv(variant, cout, cout, mid, 1), nn.BatchNorm3d(cout))
        self.downsample: nn.Module = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
            )
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.downsample(x))


def _stem(variant: Variant, cin: int, width: int) -> nn.Sequential:
    if variant == "3d":
        return nn.Sequential(
            nn.Conv3d(cin, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(),
        )
    mid = max(1, 45 * width // 64)  # torchvision's R2Plus1dStem uses 45 for width 64
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(),
        nn.Conv3d(mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(),
    )


@register("resnet3d")
class ResNet3D(nn.Module):
    """ResNet-18 for volumes: stem (stride 1x2x2), four stages of ``layers[i]`` basic blocks with
    ``width * 2**i`` channels (stride 2 from the second stage), global average pool, Linear.

    ``variant="3d"`` is r3d_18; ``variant="2plus1d"`` factorises every 3x3x3 conv into 1x3x3 and
    3x1x1 (r2plus1d_18). ``width`` scales all channels (64 as in torchvision; smaller for small
    crops). Shapes: ``(B, in_channels, D, H, W) -> (B, num_outputs)``, any D, H, W >= 1.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        variant: Variant = "3d",
        layers: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if variant not in ("3d", "2plus1d"):
            raise ValueError(f"resnet3d: variant must be '3d' or '2plus1d', got {variant!r}")
        self.in_channels = in_channels
        self.num_outputs = classifier_outputs(num_classes)
        self.variant = variant
        stages: list[nn.Module] = [_stem(variant, in_channels, width)]
        cin = width
        for i, n in enumerate(layers):
            cout = width * 2**i
            blocks = [BasicBlock3d(variant, cin, cout, 1 if i == 0 else 2)]
            blocks += [BasicBlock3d(variant, cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.features = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(cin, self.num_outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision's video ResNets.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "resnet3d")
        return self.head(self.pool(self.features(x)))
