"""``se_resnet3d``: a small 3D residual network with squeeze-excitation, for crop classification."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from streamvol.errors import BadInput, BadOption
from streamvol.models._common import check_input, classifier_outputs
from streamvol.models._decoder import add_segmenter, check_task, segment
from streamvol.models._registry import register


class SqueezeExcite3d(nn.Module):
    """Channel gating: global average -> Linear(C, C/r) -> ReLU -> Linear(C/r, C) -> sigmoid.

    Both linear layers have no bias, so it costs ``2 * C * (C // r)`` parameters.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.gate(x.mean(dim=(2, 3, 4)))
        return x * w[:, :, None, None, None]


class SEBlock3d(nn.Module):
    """conv3-BN-ReLU-conv3-BN -> SE -> (+ shortcut) -> ReLU; 1x1x1 conv+BN shortcut if C changes."""

    def __init__(self, cin: int, cout: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.se = SqueezeExcite3d(cout, reduction)
        self.shortcut: nn.Module = (
            nn.Identity()
            if cin == cout
            else nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout))
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


@register("se_resnet3d")
class SEResNet3D(nn.Module):
    """Stem conv3(C->32)+BN+ReLU; SE blocks 32->32, max-pool, 32->64, max-pool, 64->128;
    global average pool, Dropout(0.5), Linear(128, outputs).

    Shapes: ``(B, in_channels, D, H, W) -> (B, num_outputs)``, every side >= 4 (two pools).

    Parameters of the binary model, exactly 900,001, as the spec reads (BN has weight and bias;
    its running statistics are buffers, not parameters; SE hidden width C // 16, no biases)::

        stem    conv 1*32*27 = 864            + BN 2*32 = 64                      =     928
        32->32  convs 2*(32*32*27) = 55,296   + BNs 128 + SE 2*32*2 = 128          =  55,552
        32->64  convs 32*64*27 + 64*64*27 = 165,888 + BNs 256 + SE 2*64*4 = 512
                + shortcut 32*64 + BN 128 = 2,176                                  = 168,832
        64->128 convs 64*128*27 + 128*128*27 = 663,552 + BNs 512 + SE 2*128*8 = 2,048
                + shortcut 64*128 + BN 256 = 8,448                                 = 674,560
        head    128 + 1                                                            =     129
        total                                                                        900,001

    ``task="segment"``: the same levels, the light decoder (``decoder_width`` channels) and a
    1x1x1 conv head: ``(B, in_channels, D, H, W) -> (B, num_classes, D, H, W)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        reduction: int = 16,
        dropout: float = 0.5,
        task: Literal["classify", "segment"] = "classify",
        decoder_width: int = 32,
    ) -> None:
        super().__init__()
        check_task(task, "se_resnet3d")
        if len(widths) < 1:
            raise BadOption("widths", widths, "expected at least one width (se_resnet3d)")
        self.in_channels = in_channels
        self.task = task
        self.num_pools = len(widths) - 1
        stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = [stem]
        cin = widths[0]
        for i, cout in enumerate(widths):
            block = SEBlock3d(cin, cout, reduction)
            last = i == len(widths) - 1
            stages.append(block if last else nn.Sequential(block, nn.MaxPool3d(2)))
            cin = cout
        self.features = nn.Sequential(*stages)
        self.head: nn.Module
        if task == "segment":
            add_segmenter(self, in_channels, num_classes, decoder_width)
            return
        self.num_outputs = classifier_outputs(num_classes)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(cin, self.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "se_resnet3d")
        if min(x.shape[2:]) < 2**self.num_pools:
            raise BadInput(
                f"se_resnet3d: expected every spatial side >= {2**self.num_pools}, "
                f"got {tuple(x.shape)}"
            )
        if self.task == "segment":
            return segment(self, x)
        return self.head(self.pool(self.features(x)))
