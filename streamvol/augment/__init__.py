"""augment: fresh 3D augmentation per sample and epoch, on the CPU (numba) or a torch device.

Draw parameters with a spec (``Augment.sample(rng, stored_shape, out_shape)``, the rng keyed by
``(seed, epoch, key)``), then apply them with either backend; both give the same result.
"""

from importlib import import_module
from typing import Any

from streamvol.augment._params import AugmentParams, BatchParams, stack_params
from streamvol.augment._sample import sample_params
from streamvol.augment._spec import (
    Augment,
    Blur,
    Brightness,
    Contrast,
    Cutmix,
    Elastic,
    Flip,
    Gamma,
    Mixup,
    Noise,
    Rotate,
    Scale,
    Shift,
    load_spec,
)

__all__ = [
    "Augment",
    "AugmentParams",
    "BatchParams",
    "Blur",
    "Brightness",
    "Contrast",
    "Cutmix",
    "Elastic",
    "Flip",
    "Gamma",
    "Mixup",
    "Noise",
    "Rotate",
    "Scale",
    "Shift",
    "affine_transform",
    "apply_cpu",
    "apply_gpu",
    "block_stats",
    "cutmix",
    "describe_params",
    "load_spec",
    "mix_batch",
    "mixup",
    "normal_field",
    "normal_field_torch",
    "preview_augment",
    "sample_params",
    "stack_params",
    "transform_points",
]

# The backends load on first use (numba kernels, torch, matplotlib), so code that only needs a
# spec and its margin (the sharder, the CLI) stays light.
_LAZY = {
    "affine_transform": "_cpu",
    "apply_cpu": "_cpu",
    "apply_gpu": "_gpu",
    "block_stats": "_cpu",
    "cutmix": "_mix",
    "mix_batch": "_mix",
    "mixup": "_mix",
    "normal_field": "_noise",
    "normal_field_torch": "_noise",
    "transform_points": "_points",
    "preview_augment": "_preview",
    "describe_params": "_preview",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"streamvol.augment.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'streamvol.augment' has no attribute {name!r}")
