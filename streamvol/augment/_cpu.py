"""The CPU backend: one sample at a time, inside loader workers, through the fused numba pass.

Intensity chain, in this order, on every output voxel (values in float32, coordinates in float64;
``affine_transform`` interpolates in float64, as scipy does):

1. resample the stored block (trilinear; outside the block the raw value ``cval`` = 0);
2. normalise: ``v = (v - offset) * scale`` (the loader passes the manifest's statistics);
3. gamma: with ``lo``/``hi`` the normalised min/max of the whole stored block,
   ``v = lo + (hi - lo) * clip((v - lo) / (hi - lo), 0, 1) ** gamma`` (MONAI's AdjustContrast
   on a per-sample min-max range; trilinear values stay inside [lo, hi], so only voxels read
   from outside the block are clipped);
4. contrast and brightness: ``v = (v - mean) * contrast + mean + brightness``, ``mean`` the
   normalised mean of the stored block;
5. blur (separable Gaussian, radius ``int(3 sigma + 0.5)``, edges repeated), a second pass over
   the output, only when drawn;
6. noise: ``v += noise_std * N(noise_seed, voxel index)`` (``_noise``), after the blur so the noise
   stays white.

Without blur, steps 1-4 and 6 are one pass; the block statistics (steps 3-4) cost one more
read of the block (``block_stats``), only when gamma or contrast was drawn. When the geometry
is only flips and 90-degree turns landing on whole voxels (the ``flips`` preset), step 1 reads
the stored voxels through a strided view instead of resampling (``exact_view``): same output,
~9x faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from streamvol.augment._kernels.blur import blur
from streamvol.augment._kernels.chain import copy_rows
from streamvol.augment._kernels.noise import add_noise, noise_key
from streamvol.augment._kernels.params import Intensity, intensity, sampling
from streamvol.augment._kernels.resample import resample, touch
from streamvol.augment._kernels.stats import weighted_stats
from streamvol.augment._params import AugmentParams
from streamvol.augment._points import transform_points
from streamvol.errors import BadInput, BadOption, ShapeMismatch

__all__ = ["affine_transform", "apply_cpu", "block_stats", "blur_weights", "exact_view"]


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: numba compiles read-only and writable arrays as different types, so
    every input goes in read-only and each dtype compiles once."""
    view = a.view()
    view.flags.writeable = False
    return view


_NO_MASK = _ro(np.zeros((1, 1, 1), np.uint8))
_NO_MASK_OUT = np.zeros((1, 1, 1), np.int64)
_NO_GRID = _ro(np.zeros((3, 2, 2, 2)))
_NATIVE = (np.uint8, np.uint16, np.float32)
# dtypes whose statistics compile as they are (others are read as float64 first)
_STATS_DTYPES = tuple(
    map(np.dtype, (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64))
)
_PLAIN = intensity()  # the chain that changes nothing (affine_transform)


@lru_cache(maxsize=1)
def _f16_lut() -> np.ndarray:
    """float16 bit pattern -> float32 value (numba has no float16 on the CPU)."""
    return _ro(np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32))


def _source(volume: np.ndarray, *, contiguous: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The array the kernel reads and its lookup table (float16 is read as uint16 bits); with
    ``contiguous=False`` a strided view stays a view where its dtype allows."""
    if volume.size >= 2**31:
        raise BadInput(
            f"a block of shape {volume.shape} has {volume.size} voxels; the kernels index with "
            "int32 and take at most 2**31 - 1 (augment crops, not whole volumes)"
        )
    layout = np.ascontiguousarray if contiguous else np.asarray
    if volume.dtype == np.float16:
        return _ro(layout(volume).view(np.uint16)), _f16_lut()
    if volume.dtype.type in _NATIVE and volume.dtype.isnative:
        return _ro(layout(volume)), None
    if volume.dtype.kind not in "biuf":
        raise BadInput(f"expected a real-valued volume, got dtype {volume.dtype}")
    return _ro(np.ascontiguousarray(volume, dtype=np.float32)), None


def _mask_source(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.uint8 or mask.dtype == np.bool_:
        return _ro(np.ascontiguousarray(mask).view(np.uint8))
    if mask.dtype.kind not in "iu":
        raise BadInput(f"expected an integer mask, got dtype {mask.dtype}")
    return _ro(np.ascontiguousarray(mask, dtype=np.int64))


def _matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape not in ((3, 4), (4, 4)):
        raise BadInput(f"expected a 3x4 or 4x4 matrix, got shape {m.shape}")
    return _ro(np.ascontiguousarray(m[:3]))


def exact_view(
    block: np.ndarray, matrix: np.ndarray, out_shape: Sequence[int]
) -> np.ndarray | None:
    """The output as a view of ``block`` when ``matrix`` puts every output voxel exactly on a
    stored voxel inside the block (a signed axis permutation and a whole-voxel offset: flips and
    90-degree turns); None when the output needs resampling."""
    linear, offset = matrix[:3, :3], matrix[:3, 3]
    turn, shift = np.rint(linear), np.rint(offset)
    if np.abs(linear - turn).max() > 1e-9 or np.abs(offset - shift).max() > 1e-9:
        return None
    ones = np.abs(turn)
    if not ((ones.sum(axis=0) == 1).all() and (ones.sum(axis=1) == 1).all()):
        return None
    axes = [int(np.flatnonzero(ones[:, j])[0]) for j in range(3)]  # output axis j reads axes[j]
    slices: list[slice] = [slice(None)] * 3
    for j, i in enumerate(axes):
        sign, first = int(turn[i, j]), int(shift[i])
        last = first + sign * (int(out_shape[j]) - 1)
        if min(first, last) < 0 or max(first, last) >= block.shape[i]:
            return None
        end = last + sign
        slices[i] = slice(first, end if end >= 0 else None, sign)
    return block[tuple(slices)].transpose(axes)


def blur_weights(sigma: float) -> np.ndarray:
    """Normalised Gaussian taps, radius ``int(3 sigma + 0.5)`` (scipy's rule, truncate=3)."""
    radius = int(3.0 * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def block_stats(
    block: np.ndarray, weights: Sequence[np.ndarray] | None = None
) -> tuple[float, float, float]:
    """The raw min, max and mean of a stored block, one pass: gamma's range and contrast's
    centre are the whole block's, also when a draw resamples only a part of it
    (``AugmentParams.within``). ``weights``: how many times each z, y and x index counts (a
    padded block's statistics from the unpadded voxels, ``Window.stats``); the mean is then
    weighted by their products."""
    if block.dtype not in _STATS_DTYPES:
        block = block.astype(np.float64)
    if weights is None:
        weights = [np.ones(n) for n in block.shape]
    wz, wy, wx = (np.asarray(w, np.float64) for w in weights)
    low, high, total = weighted_stats(_ro(block), wz, wy, wx, bool((wx == 1).all()))
    return float(low), float(high), float(total / (wz.sum() * wy.sum() * wx.sum()))


def _chain(
    image: np.ndarray,
    params: AugmentParams,
    offset: float,
    scale: float,
    *,
    noise: bool,
    stats: tuple[float, float, float] | None = None,
) -> Intensity:
    """The kernels' intensity parameters for ``params`` on the stored block ``image``: the
    block's normalised min, range and mean (``stats``, or ``block_stats`` of ``image``) only
    when gamma or contrast needs them, gamma skipped on a flat block."""
    lo, span, mean = 0.0, 1.0, 0.0
    do_gamma = params.gamma != 1.0
    if params.needs_block_stats:
        low, high, average = block_stats(image) if stats is None else stats
        a, b = (low - offset) * scale, (high - offset) * scale
        lo, span = min(a, b), abs(b - a)
        mean = (average - offset) * scale
        do_gamma = do_gamma and span > 0
    return intensity(
        offset=offset,
        scale=scale,
        lo=lo,
        span=span,
        gamma=params.gamma,
        mean=mean,
        contrast=params.contrast,
        brightness=params.brightness,
        noise_std=params.noise_std,
        do_gamma=do_gamma,
        do_noise=noise,
    )


def affine_transform(
    volume: np.ndarray,
    matrix: np.ndarray,
    output_shape: Sequence[int] | None = None,
    order: int = 1,
    cval: float = 0.0,
    *,
    threads: int = 1,
) -> np.ndarray:
    """``scipy.ndimage.affine_transform(volume, matrix, output_shape, order=order,
    mode="constant", cval=cval)`` for 3D volumes, with numba.

    Output voxel ``o`` reads the input at ``matrix[:3, :3] @ o + matrix[:3, 3]`` (3x4 or 4x4
    matrix); coordinates outside ``[0, n - 1]`` on any axis give ``cval``. ``order`` 0 (nearest,
    halves round up as in scipy) or 1 (trilinear). Input uint8, uint16, float16 or float32 (other
    real dtypes are converted to float32 first); the output is always float32, also for order 0
    (integer labels are exact up to 2**24).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise BadInput(f"expected a 3D (D, H, W) volume, got shape {vol.shape}")
    if order not in (0, 1):
        raise BadOption("order", order, "expected 0 (nearest) or 1 (trilinear)")
    shape = tuple(vol.shape) if output_shape is None else tuple(int(s) for s in output_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise BadOption("output_shape", output_shape, "expected 3 sizes >= 1")
    src, lut = _source(vol)
    out = np.empty(shape, np.float32)
    how = sampling(order=order, cval=cval)
    m = _matrix(matrix)
    resample(src, lut, _NO_MASK, out, _NO_MASK_OUT, m, _NO_GRID, how, _PLAIN, 0, threads)
    return out


def apply_cpu(
    sample: dict[str, Any],
    params: AugmentParams,
    *,
    offset: float = 0.0,
    scale: float = 1.0,
    threads: int = 1,
    out: np.ndarray | None = None,
    prefetch: bool = False,
    stats: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """Apply drawn ``params`` to one decoded stored sample.

    ``sample``: ``image`` (D, H, W) or (1, D, H, W) of the stored dtype, optional ``mask``
    (D, H, W) integer labels and ``points`` (N, 4) float32 [z, y, x, class] in stored voxels;
    other keys pass through, None values stay None. Returns a new dict with ``image`` float32
    (1, d, h, w) of ``params.out_shape``, ``mask`` (d, h, w) int64 (nearest) and ``points``
    moved into output voxels (those leaving the output dropped). ``threads`` > 1 splits the
    pass over numba threads (same result); loader workers keep the default 1. ``out``: a C-order
    float32 (1, d, h, w) array to write the image into (returned as ``image``), e.g. a slot of
    the batch being assembled. ``prefetch``: first read the stored block through once in memory
    order, for a block that is not in the CPU's caches (just read or mapped from a file, as in
    the loader): the resampling's scattered first reads of it cost more than that pass.
    ``stats``: the whole stored block's ``block_stats`` when ``image`` is only the part of it a
    draw reads (``params.within``), for gamma and contrast; None: ``image``'s own.
    """
    image = sample.get("image")
    if image is None:
        raise BadInput(f"expected a sample with an 'image', got keys {sorted(sample)}")
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise BadInput(f"expected image (D, H, W) or (1, D, H, W), got shape {image.shape}")
    if image.shape != params.stored_shape:
        raise ShapeMismatch(
            f"image of shape {image.shape} does not match the params' stored block "
            f"{params.stored_shape}; draw the params for this block's shape"
        )
    mask = sample.get("mask")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise ShapeMismatch(f"mask of shape {mask.shape} differs from image {image.shape}")
    blurred = params.blur_sigma > 0 and blur_weights(params.blur_sigma).size > 1
    noisy = params.noise_std > 0
    chain = _chain(image, params, offset, scale, noise=noisy and not blurred, stats=stats)
    how = sampling(has_mask=mask is not None, has_elastic=params.elastic is not None)
    shape = (1, *params.out_shape)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise BadInput(
            f"out: expected a C-contiguous float32 array of shape {shape}, got "
            f"{out.dtype} {out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}"
        )
    key = noise_key(params.noise_seed) if noisy else 0
    view = exact_view(image, params.matrix, params.out_shape) if params.elastic is None else None
    if view is not None:  # flips and 90-degree turns: the stored voxels themselves, no resampling
        copy_rows(*_source(view, contiguous=False), out[0], chain, np.uint64(key))
        if mask is not None:
            mask = exact_view(mask, params.matrix, params.out_shape).astype(np.int64)
    else:
        src, lut = _source(image)
        msrc = _mask_source(mask) if mask is not None else _NO_MASK
        mout = np.empty(params.out_shape, np.int64) if mask is not None else _NO_MASK_OUT
        grid = _ro(params.elastic) if params.elastic is not None else _NO_GRID
        if prefetch:
            touch(src)
            if mask is not None:
                touch(msrc)
        m = _matrix(params.matrix)
        resample(src, lut, msrc, out[0], mout, m, grid, how, chain, key, threads, np.float32)
        mask = mout if mask is not None else None
    if blurred:
        blur(out[0], blur_weights(params.blur_sigma))
        if noisy:
            add_noise(out[0], np.uint64(key), params.noise_std)
    result = dict(sample)
    result["image"] = out
    if mask is not None:
        result["mask"] = mask
    if sample.get("points") is not None:
        result["points"] = transform_points(sample["points"], params)
    return result
