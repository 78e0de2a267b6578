"""augment: fresh 3D augmentation per sample and epoch, on the CPU (numba) or a torch device.

Draw parameters with a spec (``Augment.sample(rng, stored_shape, out_shape)``, the rng keyed by
``(seed, epoch, key)``), then apply them with either backend; both give the same result.
"""

from streamvol.augment._cpu import affine_transform, apply_cpu
from streamvol.augment._gpu import apply_gpu
from streamvol.augment._mix import cutmix, mix_batch, mixup
from streamvol.augment._noise import normal_field, normal_field_torch
from streamvol.augment._params import AugmentParams, BatchParams, stack_params
from streamvol.augment._points import transform_points
from streamvol.augment._preview import preview_augment
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
    "cutmix",
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
