"""The sampler: (spec, rng, stored shape, output shape) -> ``AugmentParams``, a pure function.

All randomness comes from the generator it is given (the loader seeds it from
``(seed, epoch, key)``); draws happen in a fixed order, each step drawing its coin first and its
values only when the coin says so.

Geometry is one matrix (output voxel -> stored voxel)::

    M = T(c_in + shift) @ R @ F @ S(1 / scale) @ T(-c_out)

with ``c_in = (stored - 1) / 2`` and ``c_out = (out - 1) / 2`` the centres: the output cube sits
in the middle of the stored block, and rotation ``R``, flips ``F`` and zoom turn it about that
centre. On anisotropic voxels (``Augment.on_voxels``) the rotation turns physical space:
``R`` becomes ``A^-1 R A``, ``A`` the diagonal of voxel size ratios, and 90-degree turns only
swap axes of equal voxel size. With only flips and 90-degree turns every entry is a multiple of
1/2 and sampling is exact (an output voxel lands on a stored voxel).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from streamvol.augment._params import AugmentParams
from streamvol.errors import BadInput

if TYPE_CHECKING:
    from streamvol.augment._spec import Augment

__all__ = ["cube_rotations", "rotation_about", "sample_params"]


def rotation_about(axis: Sequence[float], angle: float) -> np.ndarray:
    """The 3x3 rotation by ``angle`` radians about ``axis`` (z, y, x components; Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


@lru_cache(maxsize=1)
def cube_rotations() -> tuple[np.ndarray, ...]:
    """The 24 proper rotations of the cube, as integer-valued 3x3 float64 matrices."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            r = np.zeros((3, 3))
            for i, j in enumerate(perm):
                r[i, j] = signs[i]
            if round(np.linalg.det(r)) == 1:
                out.append(r)
    return tuple(out)


def _haar(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (a normalised Gaussian quaternion)."""
    w, x, y, z = rng.standard_normal(4)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _rotation(spec: Augment, rng: np.random.Generator, out_shape: Sequence[int]) -> np.ndarray:
    rot = spec.rotate
    if rot.mode == "none" or not rng.random() < rot.p:
        return np.eye(3)
    if rot.mode == "free":
        if rot.max_angle >= 180.0:
            return _haar(rng)
        axis = rng.standard_normal(3)
        return rotation_about(axis, math.radians(rng.uniform(-rot.max_angle, rot.max_angle)))
    if rot.mode == "z":
        turn = rotation_about(
            (1.0, 0.0, 0.0), math.radians(rng.uniform(-rot.max_angle, rot.max_angle))
        )
        if rot.max_tilt == 0:
            return turn
        azimuth = rng.uniform(0.0, math.pi)
        tilt = math.radians(rng.uniform(-rot.max_tilt, rot.max_tilt))
        return rotation_about((0.0, math.cos(azimuth), math.sin(azimuth)), tilt) @ turn
    # "90": only turns that map the output box onto itself (swap equal axes of equal voxels)
    shape = np.asarray(out_shape)
    aspect = np.asarray(spec.aspect or (1.0, 1.0, 1.0))
    allowed = [
        r
        for r in cube_rotations()
        if np.array_equal(np.abs(r) @ shape, shape) and np.array_equal(np.abs(r) @ aspect, aspect)
    ]
    return allowed[int(rng.integers(len(allowed)))].copy()


def _check_shapes(stored_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[tuple, tuple]:
    stored = tuple(int(s) for s in stored_shape)
    out = tuple(int(s) for s in out_shape)
    if len(stored) != 3 or len(out) != 3 or min(stored + out) < 1:
        raise BadInput(
            f"expected (z, y, x) stored and output shapes >= 1, got {stored_shape} and {out_shape}"
        )
    return stored, out


def sample_params(
    spec: Augment,
    rng: np.random.Generator,
    stored_shape: Sequence[int],
    out_shape: Sequence[int],
) -> AugmentParams:
    """Draw one sample's parameters from ``rng`` for a stored block of ``stored_shape``
    resampled to ``out_shape``. Does not check that the margin suffices (see ``Augment.margin``):
    output voxels that fall outside read the constant 0."""
    stored, out = _check_shapes(stored_shape, out_shape)
    r = _rotation(spec, rng, out)
    flips = np.array([-1.0 if rng.random() < p else 1.0 for p in spec.flip.p])
    shift = np.zeros(3)
    if any(spec.shift.max) and rng.random() < spec.shift.p:
        shift = rng.uniform(-1.0, 1.0, 3) * np.asarray(spec.shift.max)
    zoom = 1.0
    lo, hi = spec.scale.range
    if (lo, hi) != (1.0, 1.0) and rng.random() < spec.scale.p:
        zoom = float(rng.uniform(lo, hi))
    elastic = None
    el = spec.elastic
    if el.magnitude > 0 and rng.random() < el.p:
        elastic = rng.uniform(-el.magnitude, el.magnitude, (3, el.grid, el.grid, el.grid))

    def draw(lo_hi: tuple[float, float], p: float, neutral: float) -> float:
        if lo_hi == (neutral, neutral) or not rng.random() < p:
            return neutral
        return float(rng.uniform(*lo_hi))

    gamma = draw(spec.gamma.range, spec.gamma.p, 1.0)
    contrast = draw(spec.contrast.range, spec.contrast.p, 1.0)
    brightness = draw(spec.brightness.range, spec.brightness.p, 0.0)
    noise_std = draw(spec.noise.std, spec.noise.p, 0.0)
    blur_sigma = draw(spec.blur.sigma, spec.blur.p, 0.0)
    noise_seed = int(rng.integers(0, 2**64, dtype=np.uint64))

    if spec.aspect is not None:  # turn physical space: A^-1 R A
        a = np.asarray(spec.aspect)
        r = r * a[None, :] / a[:, None]
    linear = r @ np.diag(flips) / zoom
    c_in = (np.asarray(stored, float) - 1.0) / 2.0
    c_out = (np.asarray(out, float) - 1.0) / 2.0
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = c_in + shift - linear @ c_out
    return AugmentParams(
        m,
        np.linalg.inv(m),
        stored,
        out,
        gamma=gamma,
        contrast=contrast,
        brightness=brightness,
        noise_std=noise_std,
        blur_sigma=blur_sigma,
        noise_seed=noise_seed,
        elastic=elastic,
    )
