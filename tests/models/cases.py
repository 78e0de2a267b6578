"""Small configurations of every registered model, shared by the model tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    """One model configuration small enough for a CPU test, and its documented input shape."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int, int] = (8, 8, 8)
    segment: bool = False

    @property
    def id(self) -> str:
        extra = "-".join(str(self.options[k]) for k in ("variant", "task") if k in self.options)
        return f"{self.name}-{extra}" if extra else self.name


CASES = [
    Case("simple_cnn", {}, (9, 11, 11)),
    Case("se_resnet3d", {"widths": (4, 8, 8)}, (8, 8, 8)),
    Case(
        "vgg3d",
        {"input_shape": (16, 16, 16), "convs_per_level": (1, 2), "base_width": 4, "hidden": 16},
        (16, 16, 16),
    ),
    Case("resnet3d", {"width": 4}, (8, 16, 16)),
    Case("resnet3d", {"width": 4, "variant": "2plus1d"}, (8, 16, 16)),
    Case("resnet3d", {"width": 4, "variant": "mc3_18", "norm": "group"}, (8, 16, 16)),
    Case("simple_cnn", {"task": "segment", "decoder_width": 4}, (9, 11, 11), segment=True),
    Case(
        "resnet3d",
        {"width": 4, "task": "segment", "decoder_width": 4},
        (8, 16, 16),
        segment=True,
    ),
    Case("unet3d", {"depth": 2, "base_width": 4}, (8, 8, 8), segment=True),
    Case("vit3d", {"input_shape": (16, 16, 16), "dim": 16, "depth": 2, "heads": 2}, (16, 16, 16)),
    Case(
        "vit3d",
        {
            "input_shape": (12, 12, 12),
            "patch_size": 6,
            "dim": 16,
            "depth": 2,
            "heads": 2,
            "task": "segment",
            "decoder_width": 4,
        },
        (12, 12, 12),
        segment=True,
    ),
]
