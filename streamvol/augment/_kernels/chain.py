"""The intensity chain and the noise, one output row at a time (``finish_row``, inlined into
every kernel that writes an image), and ``copy_rows``: that chain over stored voxels that need
no resampling (flips and 90-degree turns).

The chain runs in the precision of the row it is given (float32 on the augment path, float64
for ``affine_transform``); without gamma, normalise + contrast + brightness fold into one affine
map of the raw value. ``INLINED_SHA256`` is this file's record for numba's cache (see the
package docstring).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamvol.augment._kernels._cache import cache_if_unchanged
from streamvol.augment._kernels.extend import like
from streamvol.augment._kernels.noise import NOISE_TABLE, SHIFT, noise_words, split_key
from streamvol.augment._kernels.params import Intensity

# the files whose code the kernels below compile in, and their sha256 (``_cache.sources_sha256``)
INLINED = ("extend.py", "noise.py", "params.py")
INLINED_SHA256 = "b1f354418ccbf3edd07abd4f4fbde14b98567b2101bf98d48f9da21efa9287a9"


@njit(cache=True, inline="always")
def finish_row(
    raw: np.ndarray,
    out: np.ndarray,
    words: np.ndarray,
    first: int,
    k0: np.uint32,
    k1: np.uint32,
    p: Intensity,
) -> None:
    """One row's intensity chain and noise, from the raw values ``raw`` into ``out`` (float32),
    in ``raw``'s precision; ``first`` is the row's first voxel index (the noise counter)."""
    if p.do_noise:
        noise_words(words, k0, k1, first)
    if p.do_gamma:
        offset, scale, lo, span, gamma = p.offset, p.scale, p.lo, p.span, p.gamma
        mean, contrast, brightness = p.mean, p.contrast, p.brightness
        for x in range(out.shape[0]):
            v = (raw[x] - offset) * scale
            r = min(max((v - lo) / span, 0.0), 1.0)
            v = r**gamma * span + lo
            raw[x] = (v - mean) * contrast + mean + brightness
        g, b = like(raw, 1.0), like(raw, 0.0)
    else:  # without gamma, normalise + contrast + brightness is one affine map of the raw value
        g = like(raw, p.scale * p.contrast)
        b = like(raw, (-p.offset * p.scale - p.mean) * p.contrast + p.mean + p.brightness)
    if p.do_noise:
        std = like(raw, p.noise_std)
        for x in range(out.shape[0]):
            out[x] = raw[x] * g + b + std * NOISE_TABLE[words[x] >> SHIFT]
    else:
        for x in range(out.shape[0]):
            out[x] = raw[x] * g + b


@njit(nogil=True)
def copy_rows(
    view: np.ndarray, lut: np.ndarray, out: np.ndarray, p: Intensity, key: np.uint64
) -> None:
    """``out`` from ``view``, a (strided) view of the stored block that already is the output's
    geometry (flips and 90-degree turns land on stored voxels): the intensity chain and the
    noise of the resampling kernel, without resampling. ``lut``: None, or a table the raw values
    index (float16 read as its uint16 bits)."""
    oz, oy, ox = out.shape
    raw = np.empty(ox)
    words = np.empty(ox, np.uint32)
    k0, k1 = split_key(key)
    for z in range(oz):
        for y in range(oy):
            row = view[z, y]
            if lut is not None:
                for x in range(ox):
                    raw[x] = lut[row[x]]
            else:
                for x in range(ox):
                    raw[x] = row[x]
            finish_row(raw, out[z, y], words, (z * oy + y) * ox, k0, k1, p)


CACHED = cache_if_unchanged(__file__, INLINED, INLINED_SHA256, copy_rows)
