"""augment: fresh 3D augmentation per sample and epoch, on the CPU (numba) or a torch device.

Draw parameters with a spec (``Augment.sample(rng, stored_shape, out_shape)``, the rng keyed by
``(seed, epoch, key)``), then apply them with either backend; both give the same result.
"""

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
from streamvol.core.lazy import lazy_names

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
    "affine_transform": "streamvol.augment._cpu",
    "apply_cpu": "streamvol.augment._cpu",
    "apply_gpu": "streamvol.augment._gpu",
    "block_stats": "streamvol.augment._cpu",
    "cutmix": "streamvol.augment._mix",
    "mix_batch": "streamvol.augment._mix",
    "mixup": "streamvol.augment._mix",
    "normal_field": "streamvol.augment._noise",
    "normal_field_torch": "streamvol.augment._noise",
    "transform_points": "streamvol.augment._points",
    "preview_augment": "streamvol.augment._preview",
    "describe_params": "streamvol.augment._preview",
}


__getattr__ = lazy_names(__name__, _LAZY)
