"""The workload every loader runs: free rotation (trilinear), a flip of each axis with p 0.5,
additive Gaussian noise with std uniform in [0, 0.1] after normalisation; and one thread per
process for every library, so the loader workers are the only parallelism."""

from __future__ import annotations

from typing import Any

import torch

BATCH = 8
FLIP_P = 0.5
NOISE_STD = 0.1


def augment_spec() -> Any:
    """streamvol's side of the shared workload: free rotation, flips, noise; nothing else."""
    from streamvol.augment import Augment, Flip, Noise, Rotate

    return Augment(
        rotate=Rotate(mode="free", max_angle=180.0),
        flip=Flip(p=(FLIP_P, FLIP_P, FLIP_P)),
        noise=Noise(std=(0.0, NOISE_STD), p=1.0),
    )


SPEC_TOML = f"""[rotate]
mode = "free"
max_angle = 180.0

[flip]
p = [{FLIP_P}, {FLIP_P}, {FLIP_P}]

[noise]
std = [0.0, {NOISE_STD}]
p = 1.0
"""


def single_thread(_: int = 0) -> None:
    """Every library one thread per process: the loader workers are the parallelism. And one
    allocator setting for every loader and the bare kernel alike: freed memory kept for reuse
    (``streamvol.core.heap.keep_freed_memory``, as the loader's workers do)."""
    from streamvol.core.heap import keep_freed_memory

    keep_freed_memory("samples")
    torch.set_num_threads(1)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except ImportError:
        pass
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
