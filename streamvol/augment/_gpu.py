"""The GPU backend: the same parameters applied to a whole batch with torch, on any device.

Geometry: the sampling grid is built straight from each sample's output -> stored matrix (the
scipy convention) in float64 and fed to ``torch.nn.functional.grid_sample`` with
``align_corners=True``, the core of kornia's ``warp_affine3d``. Going through ``warp_affine3d``
itself would mean inverting our matrix into its source -> destination, (x, y, z)-ordered form,
for kornia to invert back in float32; the tests check that both routes agree. Images are
trilinear, masks nearest (torch rounds halves to even where the CPU rounds them up: the two
differ only at exact ties), coordinates outside the block read the raw value 0 as on the CPU.

Intensity follows the CPU chain (``_cpu`` module docstring) with torch ops in float32; the
noise is the same counter-based field (``normal_field_torch``), so the two backends agree to
float32 rounding. Points are moved by the shared ``_points.move_points`` on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from streamvol.augment._noise import normal_field_torch
from streamvol.augment._params import AugmentParams, BatchParams
from streamvol.augment._points import move_points, torch_ops
from streamvol.errors import ShapeMismatch

__all__ = ["apply_gpu"]


def _interp_matrix(n_out: int, n_grid: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """(n_out, n_grid) linear-interpolation weights from grid nodes spanning the output."""
    t = torch.arange(n_out, dtype=dtype, device=device)
    t = t * ((n_grid - 1) / (n_out - 1)) if n_out > 1 else t * 0
    k = t.floor().clamp(0, max(n_grid - 2, 0))
    f = t - k
    w = torch.zeros(n_out, n_grid, dtype=dtype, device=device)
    rows = torch.arange(n_out, device=device)
    w[rows, k.long()] += 1 - f
    w[rows, (k.long() + 1).clamp(max=n_grid - 1)] += f
    return w


def _coordinates(p: BatchParams, dtype: torch.dtype) -> list[torch.Tensor]:
    """Stored-block coordinates (z, y, x), each (B, d, h, w), of every output voxel."""
    device = p.matrix.device
    d, h, w = p.out_shape
    b = len(p)
    z = torch.arange(d, dtype=dtype, device=device).view(1, d, 1, 1)
    y = torch.arange(h, dtype=dtype, device=device).view(1, 1, h, 1)
    x = torch.arange(w, dtype=dtype, device=device).view(1, 1, 1, w)
    m = p.matrix.to(dtype).view(b, 4, 4, 1, 1, 1)
    coords = [m[:, i, 0] * z + m[:, i, 1] * y + m[:, i, 2] * x + m[:, i, 3] for i in range(3)]
    if p.elastic is not None:
        grid = p.elastic.to(dtype)
        g = grid.shape[-3:]
        wz, wy, wx = (
            _interp_matrix(n, k, dtype, device) for n, k in zip((d, h, w), g, strict=True)
        )
        disp = torch.einsum("zi,yj,xk,bcijk->bczyx", wz, wy, wx, grid)
        coords = [c + disp[:, i] for i, c in enumerate(coords)]
    return coords


def _blur(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian (B, d, h, w), same taps and edge rule as the CPU."""
    b = v.shape[0]
    radius = (3.0 * sigma + 0.5).floor()
    r = int(radius.max())
    if r == 0:
        return v
    k = torch.arange(-r, r + 1, dtype=torch.float64, device=v.device).view(1, -1)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma)).view(-1, 1)
    taps = torch.exp(-0.5 * (k / safe) ** 2) * (k.abs() <= radius.view(-1, 1))
    taps = torch.where((radius > 0).view(-1, 1), taps, (k == 0).to(taps.dtype))
    taps = (taps / taps.sum(1, keepdim=True)).to(v.dtype)
    x = v.unsqueeze(0)  # (1, B, d, h, w): one group per sample
    for axis in (4, 3, 2):  # x, y, z as on the CPU
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = r
        shape = [b, 1, 1, 1, 1]
        shape[axis] = 2 * r + 1
        x = F.conv3d(F.pad(x, pad, mode="replicate"), taps.view(shape), groups=b)
    return x[0]


def _points(batch: dict[str, Any], p: BatchParams) -> dict[str, Any]:
    points = batch["points"]
    b, n = points.shape[0], points.shape[1]
    count = batch.get("points_count")
    if count is None:
        count = torch.full((b,), n, dtype=torch.int64, device=points.device)
    count = count.to(points.device)
    present = torch.arange(n, device=points.device).view(1, n) < count.view(b, 1)
    zyx = points[..., :3].to(torch.float64)
    elastic = None if p.elastic is None else p.elastic.to(points.device)
    o, keep = move_points(zyx, p.inverse.to(points.device), elastic, p.out_shape, torch_ops())
    keep = keep & present
    moved = torch.stack([*o, points[..., 3].to(torch.float64)], dim=-1).to(torch.float32)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    moved = torch.take_along_dim(moved, order.unsqueeze(-1), dim=1)
    new_count = keep.sum(1)
    moved = moved * (torch.arange(n, device=points.device).view(1, n, 1) < new_count.view(b, 1, 1))
    return {"points": moved, "points_count": new_count}


def apply_gpu(
    batch: dict[str, Any],
    params: Sequence[AugmentParams] | BatchParams,
    *,
    offset: float | torch.Tensor = 0.0,
    scale: float | torch.Tensor = 1.0,
) -> dict[str, Any]:
    """Apply per-sample parameters to a batch on its device.

    ``batch``: ``image`` (B, 1, D, H, W) or (B, D, H, W), any of uint8 / uint16 / float16 /
    float32; optional ``mask`` (B, D, H, W) integer; optional ``points`` (B, N, 4) float32
    padded, with ``points_count`` (B,) (all N when absent). ``offset`` and ``scale`` are floats
    or (B,) tensors. Returns ``image`` float32 (B, 1, d, h, w), ``mask`` int64 (B, d, h, w),
    ``points`` (B, N, 4) with the kept points first and ``points_count``.
    """
    image = batch["image"]
    if image.ndim == 4:
        image = image.unsqueeze(1)
    if image.ndim != 5 or image.shape[1] != 1:
        raise ValueError(
            f"expected image (B, 1, D, H, W) or (B, D, H, W), got {tuple(image.shape)}"
        )
    p = params if isinstance(params, BatchParams) else BatchParams.stack(params)
    device = image.device
    p = p.to(device)
    b = image.shape[0]
    if len(p) != b:
        raise ValueError(f"batch of {b} images but {len(p)} parameter sets")
    if tuple(image.shape[2:]) != p.stored_shape:
        raise ShapeMismatch(
            f"images of shape {tuple(image.shape[2:])} do not match the params' stored block "
            f"{p.stored_shape}"
        )
    fdt = torch.float32 if device.type == "mps" else torch.float64
    coords = _coordinates(p, fdt)
    sizes = p.stored_shape
    valid = None
    for c, n in zip(coords, sizes, strict=True):
        ok = (c >= 0) & (c <= n - 1)
        valid = ok if valid is None else valid & ok
    norm = [
        c * (2.0 / (n - 1)) - 1.0 if n > 1 else c * 0 for c, n in zip(coords, sizes, strict=True)
    ]
    grid = torch.stack(norm[::-1], dim=-1).to(torch.float32)  # grid_sample wants (x, y, z)
    src = image.to(torch.float32)
    v = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
    v = torch.where(valid, v, torch.zeros((), dtype=v.dtype, device=device))

    def per_sample(value: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float64, device=device)
        return t.expand(b).reshape(b, 1, 1, 1)

    off, sc = per_sample(offset), per_sample(scale)
    gamma, contrast = p.gamma.view(b, 1, 1, 1), p.contrast.view(b, 1, 1, 1)
    # one host sync decides which optional steps run
    need = torch.stack(
        [
            (p.gamma != 1).any().double(),
            (p.contrast != 1).any().double(),
            (p.noise_std > 0).any().double(),
            p.blur_sigma.max(),
        ]
    ).cpu()
    v = (v - off.float()) * sc.float()
    if need[0] or need[1]:
        a = (src.amin(dim=(1, 2, 3, 4)).double().view(b, 1, 1, 1) - off) * sc
        z = (src.amax(dim=(1, 2, 3, 4)).double().view(b, 1, 1, 1) - off) * sc
        mean = ((src.mean(dim=(1, 2, 3, 4)).double().view(b, 1, 1, 1) - off) * sc).float()
        lo, span = torch.minimum(a, z).float(), (z - a).abs().float()
        if need[0]:
            use = (gamma != 1) & (span > 0)
            r = ((v - lo) / torch.where(span > 0, span, 1.0)).clamp(0.0, 1.0)
            v = torch.where(use, r ** gamma.float() * span + lo, v)
        v = (v - mean) * contrast.float() + mean
    v = v + p.brightness.view(b, 1, 1, 1).float()
    if need[3] > 0:
        v = _blur(v, p.blur_sigma)
    if need[2]:
        noise = normal_field_torch(p.noise_seed, p.out_shape, device)
        v = v + (p.noise_std.view(b, 1, 1, 1) * noise).float()
    out: dict[str, Any] = {"image": v.unsqueeze(1).contiguous()}
    if batch.get("mask") is not None:
        mask = batch["mask"]
        if mask.ndim == 5:
            mask = mask[:, 0]
        if tuple(mask.shape) != (b, *p.stored_shape):
            raise ShapeMismatch(
                f"mask of shape {tuple(mask.shape)} differs from image {tuple(image.shape)}"
            )
        labels = F.grid_sample(
            mask.unsqueeze(1).to(torch.float32),
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=True,
        )[:, 0]
        out["mask"] = torch.where(valid, labels, 0.0).to(torch.int64)
    if batch.get("points") is not None:
        out.update(_points(batch, p))
    return out
