"""Move points (z, y, x in stored voxels) into output voxels: one implementation for both
backends, written with operators that mean the same on numpy arrays and torch tensors.

A point ``p`` goes to ``o = inverse @ p``; with an elastic field the output voxel ``o`` reads
``M @ o + d(o)``, so ``o`` solves ``o = inverse @ (p - d(o))``, found by fixed-point iteration
(the field is smooth, so it contracts). Points are kept when ``-0.5 <= o < out - 0.5`` on every
axis (the voxel-centred rule the sharder uses). All arithmetic is float64. The affine step is
the ops table's: numpy's elementwise sum on the CPU, kornia's ``transform_points`` (a batched
matrix product) on torch devices; the two differ by float64 rounding at most (1e-14 of a voxel),
which the float32 points the backends return do not show.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from streamvol.errors import BadInput

ELASTIC_ITERATIONS = 20


def _affine(zyx: Any, m: Any) -> Any:
    """``m[..., :3, :3] @ p + m[..., :3, 3]`` for points (..., N, 3) and matrices (..., 4, 4)."""
    cols = []
    for i in range(3):
        v = m[..., i : i + 1, 0] * zyx[..., 0]
        v = v + m[..., i : i + 1, 1] * zyx[..., 1]
        v = v + m[..., i : i + 1, 2] * zyx[..., 2]
        cols.append(v + m[..., i : i + 1, 3])
    return cols


def _lerp_axis(t: Any, n: int, floor: Any, clip: Any) -> tuple[Any, Any, Any]:
    """Lower index, upper index and weight of a linear interpolation on ``n`` nodes."""
    t = clip(t, 0.0, float(n - 1))
    k = clip(floor(t), 0.0, float(max(n - 2, 0)))
    return k, clip(k + 1.0, 0.0, float(n - 1)), t - k


def _displacement(o: list, grid: Any, out_shape: tuple, ops: dict) -> list:
    """Trilinear displacement at output voxels ``o`` (three (..., N) arrays) from ``grid``
    (..., 3, g, g, g) whose control points span the output corner to corner."""
    floor, clip, take, to_index = ops["floor"], ops["clip"], ops["take"], ops["index"]
    g = grid.shape[-3:]
    axes = []
    for t, n_out, n_grid in zip(o, out_shape, g, strict=True):
        scale = (n_grid - 1) / (n_out - 1) if n_out > 1 else 0.0
        axes.append(_lerp_axis(t * scale, n_grid, floor, clip))
    flat = grid.reshape(*grid.shape[:-4], 3, -1)
    (z0, z1, fz), (y0, y1, fy), (x0, x1, fx) = axes
    out = []
    for a in range(3):
        values = flat[..., a, :]
        acc = None
        for kz, wz in ((z0, 1.0 - fz), (z1, fz)):
            for ky, wy in ((y0, 1.0 - fy), (y1, fy)):
                for kx, wx in ((x0, 1.0 - fx), (x1, fx)):
                    index = to_index((kz * g[1] + ky) * g[2] + kx)
                    term = take(values, index) * (wz * wy * wx)
                    acc = term if acc is None else acc + term
        out.append(acc)
    return out


def move_points(
    zyx: Any, inverse: Any, elastic: Any, out_shape: tuple, ops: dict
) -> tuple[list, Any]:
    """Output coordinates (three (..., N) arrays) and the keep mask for points ``zyx`` (..., N, 3).

    ``ops`` supplies affine (points, 4x4 matrices -> three coordinate arrays), floor, clip, take
    (along the last axis), index (float -> integer array), logical_and and stack for the array
    library in use (see ``NUMPY_OPS`` and ``torch_ops``)."""
    affine = ops["affine"]
    o = affine(zyx, inverse)
    if elastic is not None:
        for _ in range(ELASTIC_ITERATIONS):
            d = _displacement(o, elastic, out_shape, ops)
            shifted = zyx[..., 0] - d[0], zyx[..., 1] - d[1], zyx[..., 2] - d[2]
            o = affine(ops["stack"](shifted), inverse)
    keep = None
    for v, n in zip(o, out_shape, strict=True):
        inside = ops["logical_and"](v >= -0.5, v < n - 0.5)
        keep = inside if keep is None else ops["logical_and"](keep, inside)
    return o, keep


NUMPY_OPS = {
    "affine": _affine,
    "floor": np.floor,
    "clip": np.clip,
    "take": lambda values, index: np.take_along_axis(values, index, axis=-1),
    "index": lambda v: v.astype(np.int64),
    "logical_and": np.logical_and,
    "stack": lambda parts: np.stack(parts, axis=-1),
}


@lru_cache(maxsize=1)
@lru_cache(maxsize=1)
def _unit_w() -> float:
    """The homogeneous ``w`` that kornia's ``transform_points`` turns into a division by exactly
    1. kornia up to 0.8 divides by ``w + eps`` (``convert_points_from_homogeneous``, eps 1e-8),
    which for w = 1 would scale every point by 1 - 1e-8 (2e-6 of a voxel at 200: float32
    coordinates one unit in the last place off in one case of eight); 0.9 divides by ``w``. The
    ``w`` that gives a probe point back unchanged is the one for the installed kornia."""
    import inspect

    import torch
    from kornia.geometry.conversions import convert_points_from_homogeneous

    eps = inspect.signature(convert_points_from_homogeneous).parameters["eps"].default
    for w in (1.0, 1.0 - eps):
        probe = torch.tensor([[3.0, w]], dtype=torch.float64)
        if convert_points_from_homogeneous(probe)[0, 0].item() == 3.0:
            return w
    return 1.0


def _kornia_affine(zyx: Any, m: Any) -> list:
    """``m[..., :3, :3] @ p + m[..., :3, 3]`` for points (B, N, 3) and matrices (B, 4, 4) with
    kornia's ``transform_points`` (the matrices' last row is set to (0, 0, 0, ``_unit_w``))."""
    import torch
    from kornia.geometry.linalg import transform_points

    if zyx.shape[-2] == 0:  # kornia cannot reshape an empty batch of points
        return _affine(zyx, m)
    last = torch.tensor([0.0, 0.0, 0.0, _unit_w()], dtype=m.dtype, device=m.device)
    m = torch.cat([m[..., :3, :], last.expand(*m.shape[:-2], 1, 4)], dim=-2)
    return list(transform_points(m, zyx).unbind(-1))


def torch_ops() -> dict:
    """The ``ops`` table for torch tensors (the affine step by kornia)."""
    import torch

    return {
        "affine": _kornia_affine,
        "floor": torch.floor,
        "clip": torch.clamp,
        "take": lambda values, index: torch.take_along_dim(values, index, dim=-1),
        "index": lambda v: v.to(torch.int64),
        "logical_and": torch.logical_and,
        "stack": lambda parts: torch.stack(parts, dim=-1),
    }


def transform_points(points: np.ndarray, params: Any) -> np.ndarray:
    """Points (N, 4) float32 [z, y, x, class] in stored voxels -> output voxels, those that
    leave the output dropped (numpy; the CPU backend)."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise BadInput(f"expected points of shape (N, 4) [z, y, x, class], got {pts.shape}")
    zyx = pts[:, :3].astype(np.float64)
    o, keep = move_points(zyx, params.inverse, params.elastic, params.out_shape, NUMPY_OPS)
    out = np.empty((int(keep.sum()), 4), np.float32)
    for i in range(3):
        out[:, i] = o[i][keep]
    out[:, 3] = pts[keep, 3]
    return out
