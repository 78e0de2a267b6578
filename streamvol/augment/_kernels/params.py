"""The kernels' typed parameters: named tuples of floats and bools, which numba passes by value
as one struct and reads by field at no cost (no array to index, no constants to index it with).

Each field has one type, fixed here, so every call compiles (and caches) the same signature: an
int where a float belongs would compile a second kernel. Build them with ``sampling()`` and
``intensity()``, which convert their arguments; a replaced field (``p._replace(gamma=2)``) must
keep its type.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Intensity", "Sampling", "intensity", "sampling"]


class Sampling(NamedTuple):
    """How the output reads the stored block.

    ``order``: 0 nearest, 1 trilinear (masks are always nearest). ``cval``: the raw value read
    outside the block. ``has_mask``, ``has_elastic``: whether the mask arrays and the elastic
    grid passed beside are real (otherwise they are placeholders the kernel does not read).
    """

    order: int
    cval: float
    has_mask: bool
    has_elastic: bool


class Intensity(NamedTuple):
    """The intensity chain after resampling, per voxel (the order is in ``_cpu``'s docstring).

    normalise ``v = (v - offset) * scale``; with ``do_gamma``, ``v = lo + span * clip((v - lo)
    / span, 0, 1) ** gamma``; ``v = (v - mean) * contrast + mean + brightness``; with
    ``do_noise``, ``v += noise_std * N(key, voxel)``.
    """

    offset: float
    scale: float
    lo: float
    span: float
    gamma: float
    mean: float
    contrast: float
    brightness: float
    noise_std: float
    do_gamma: bool
    do_noise: bool


def sampling(
    *, order: int = 1, cval: float = 0.0, has_mask: bool = False, has_elastic: bool = False
) -> Sampling:
    """A ``Sampling`` with each field converted to its type."""
    return Sampling(int(order), float(cval), bool(has_mask), bool(has_elastic))


def intensity(
    *,
    offset: float = 0.0,
    scale: float = 1.0,
    lo: float = 0.0,
    span: float = 1.0,
    gamma: float = 1.0,
    mean: float = 0.0,
    contrast: float = 1.0,
    brightness: float = 0.0,
    noise_std: float = 0.0,
    do_gamma: bool = False,
    do_noise: bool = False,
) -> Intensity:
    """An ``Intensity`` with each field converted to its type; the defaults change nothing."""
    return Intensity(
        float(offset),
        float(scale),
        float(lo),
        float(span),
        float(gamma),
        float(mean),
        float(contrast),
        float(brightness),
        float(noise_std),
        bool(do_gamma),
        bool(do_noise),
    )
