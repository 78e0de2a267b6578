"""``vgg3d``: VGG-style levels of conv-BN-ReLU then max-pool, widths doubling, MLP classifier."""

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


@register("vgg3d")
class VGG3D(nn.Module):
    """VGG for volumes: level i is ``convs_per_level[i]`` x (conv3 + BN + ReLU) then MaxPool(2),
    with ``min(base_width * 2**i, max_width)`` feature maps.

    ``classifier="full"`` flattens the last map into Linear(F, 4096)-ReLU-Dropout-Linear(4096,
    4096)-ReLU-Dropout-Linear(4096, outputs); F is computed from ``input_shape``, so inputs must
    pool to the same grid. ``classifier="reduced"`` global-average-pools instead and uses one
    hidden layer (``hidden`` defaults to 256), so any input with every side >= 2**levels works.

    Shapes: ``(B, in_channels, *input_shape) -> (B, num_outputs)``. ``model.features`` holds one
    module per level, in order, for ``freeze_features`` / ``unfreeze_schedule``.

    ``task="segment"``: the same levels, the light decoder (``decoder_width`` channels) and a
    1x1x1 conv head: ``(B, in_channels, D, H, W) -> (B, num_classes, D, H, W)`` for any input
    with every side >= 2**levels (no classifier, ``input_shape`` unused).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int,
        input_shape: Sequence[int] = (32, 32, 32),
        convs_per_level: Sequence[int] = (1, 1, 2, 2),
        base_width: int = 32,
        max_width: int = 512,
        classifier: Literal["full", "reduced"] = "full",
        hidden: int | None = None,
        dropout: float = 0.5,
        task: Literal["classify", "segment"] = "classify",
        decoder_width: int = 32,
    ) -> None:
        super().__init__()
        check_task(task, "vgg3d")
        if len(input_shape) != 3:
            raise BadOption("input_shape", input_shape, "expected (D, H, W) (vgg3d)")
        if classifier not in ("full", "reduced"):
            raise BadOption("classifier", classifier, "expected 'full' or 'reduced' (vgg3d)")
        self.in_channels = in_channels
        self.task = task
        self.classifier_kind = classifier
        n_levels = len(convs_per_level)
        self.pooled_shape = tuple(int(s) // 2**n_levels for s in input_shape)
        if min(self.pooled_shape) < 1:
            raise BadOption(
                "input_shape",
                tuple(input_shape),
                f"too small for {n_levels} levels; expected every side >= {2**n_levels} (vgg3d)",
            )
        levels: list[nn.Module] = []
        c = in_channels
        for i, n in enumerate(convs_per_level):
            w = min(base_width * 2**i, max_width)
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv3d(c, w, 3, padding=1, bias=False), nn.BatchNorm3d(w), nn.ReLU()]
                c = w
            layers.append(nn.MaxPool3d(2))
            levels.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*levels)
        self.head: nn.Module
        if task == "segment":
            add_segmenter(self, in_channels, num_classes, decoder_width)
            return
        self.num_outputs = classifier_outputs(num_classes)
        if classifier == "full":
            hidden = 4096 if hidden is None else hidden
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * math.prod(self.pooled_shape), hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
            )
        else:
            hidden = 256 if hidden is None else hidden
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool3d(1),
                nn.Flatten(),
                nn.Linear(c, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
            )
        self.head = nn.Linear(hidden, self.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "vgg3d")
        n = len(self.features)
        pooled = tuple(s // 2**n for s in x.shape[2:])
        if self.task == "segment":
            if min(pooled) < 1:
                raise BadInput(
                    f"vgg3d: expected every spatial side >= {2**n}, got {tuple(x.shape)}"
                )
            return segment(self, x)
        if self.classifier_kind == "full" and pooled != self.pooled_shape:
            raise BadInput(
                f"vgg3d: full classifier built for inputs pooling to {self.pooled_shape} "
                f"((D, H, W) // {2**n}); got {tuple(x.shape)}"
            )
        if min(pooled) < 1:
            raise BadInput(f"vgg3d: expected every spatial side >= {2**n}, got {tuple(x.shape)}")
        return self.head(self.classifier(self.features(x)))
