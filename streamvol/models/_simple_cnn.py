"""``simple_cnn``: the zms2 spot classifier, a two-level CNN for 9x11x11 crops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from streamvol.errors import BadInput, BadOption
from streamvol.models._common import check_input, classifier_outputs
from streamvol.models._decoder import add_segmenter, check_task, segment
from streamvol.models._registry import register


@register("simple_cnn")
class SimpleCNN(nn.Module):
    """Conv3d(C,4,3)-ReLU-MaxPool(2)-Conv3d(4,4,3)-ReLU-MaxPool(2)-Flatten-Linear(., 512)-ReLU-
    Dropout(0.5)-Linear(512, outputs).

    Shapes: ``(B, in_channels, *input_shape) -> (B, num_outputs)``. Any input whose size halved
    twice (floor) equals that of ``input_shape`` is accepted. With the default 9x11x11 input the
    pooled map is 4 x 2x2x2 = 32 features, and the binary model has exactly 17,957 parameters:
    conv1 4*27+4 = 112, conv2 4*4*27+4 = 436, fc 32*512+512 = 16,896, head 512+1 = 513.

    ``task="segment"``: the same two levels, then the light decoder (``decoder_width``
    channels) and a 1x1x1 conv head: ``(B, in_channels, D, H, W) -> (B, num_classes, D, H, W)``
    for any D, H, W >= 4 (``input_shape`` is not used).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        input_shape: Sequence[int] = (9, 11, 11),
        hidden: int = 512,
        dropout: float = 0.5,
        task: Literal["classify", "segment"] = "classify",
        decoder_width: int = 16,
    ) -> None:
        super().__init__()
        check_task(task, "simple_cnn")
        if len(input_shape) != 3:
            raise BadOption("input_shape", input_shape, "expected (D, H, W) (simple_cnn)")
        self.in_channels = in_channels
        self.task = task
        self.pooled_shape = tuple(int(s) // 4 for s in input_shape)
        if min(self.pooled_shape) < 1:
            raise BadOption(
                "input_shape",
                tuple(input_shape),
                "too small; expected every side >= 4 (simple_cnn)",
            )
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv3d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2)),
            nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2)),
        )
        self.head: nn.Module
        if task == "segment":
            add_segmenter(self, in_channels, num_classes, decoder_width)
            return
        self.num_outputs = classifier_outputs(num_classes)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * math.prod(self.pooled_shape), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, self.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "simple_cnn")
        if self.task == "segment":
            if min(x.shape[2:]) < 4:
                raise BadInput(f"simple_cnn: expected every side >= 4, got {tuple(x.shape)}")
            return segment(self, x)
        if tuple(s // 4 for s in x.shape[2:]) != self.pooled_shape:
            raise BadInput(
                f"simple_cnn: built for inputs pooling to {self.pooled_shape} (D, H, W) // 4; "
                f"got {tuple(x.shape)}"
            )
        return self.head(self.classifier(self.features(x)))
