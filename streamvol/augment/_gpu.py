"""The GPU backend: the same parameters applied to a whole batch on its device; geometry by
kornia, intensity by torch.

Geometry: each sample's output -> stored matrix (scipy convention, (z, y, x)) is put in kornia's
(x, y, z) order and normalised to grid coordinates ([-1, 1] corner to corner) by kornia's
``normalize_homography3d``, in float64; the sampling grid made from it and ``F.grid_sample``
(``align_corners=True``) then resample the batch in float32. These are the steps of kornia's
``warp_affine3d`` less its first: it takes the source -> destination matrix and inverts it in
float32, where ours already maps each output voxel to the block (the tests check that the two
agree to 1e-5). Two departures, both for exactness on CUDA, where float32 matrix products and
cuDNN convolutions may round through TF32 (a 10-bit mantissa): the grid is written with
broadcast elementwise ops, not ``F.affine_grid``'s batched matrix product (which also makes a
(B, d, h, w, 4) base grid first), and the elastic field and the blur run in float64. Images are
trilinear, masks nearest (torch rounds halves to even where the CPU rounds them up: the two
differ only at exact ties).

The CPU backend reads the raw value 0 wherever a coordinate leaves ``[0, n - 1]``, where
``grid_sample`` would blend the edge voxel with zeros. A sample that may read outside the block
(its output box's corners, widened by its largest elastic displacement, leave it: never with the
margin the sharder keeps) has its float64 coordinates computed and those voxels zeroed, exactly as
on the CPU; the others cost nothing more.

Intensity follows the CPU chain (``_cpu`` module docstring) with torch ops in float32; the noise
is the same counter-based field (``normal_field_torch``), so the two backends agree to float32
rounding. Points are moved by the shared ``_points.move_points``, with kornia's
``transform_points`` for the affine step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_homography3d

from streamvol.augment._noise import normal_field_torch
from streamvol.augment._params import AugmentParams, BatchParams
from streamvol.augment._points import move_points, torch_ops
from streamvol.errors import BadInput, ShapeMismatch

__all__ = ["apply_gpu", "grid_theta"]

# swaps (z, y, x) and (x, y, z); its own inverse
_SWAP = ((0.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def grid_theta(p: BatchParams) -> torch.Tensor:
    """(B, 3, 4) float64: each output -> stored matrix as ``F.affine_grid`` takes it, in
    (x, y, z) order and normalised coordinates on both sides (kornia's ``normalize_homography3d``
    with the output as its source and the block as its destination)."""
    swap = torch.tensor(_SWAP, dtype=p.matrix.dtype, device=p.matrix.device)
    xyz = swap @ p.matrix @ swap
    return normalize_homography3d(xyz, p.out_shape, p.stored_shape)[:, :3]


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


def _displacement(p: BatchParams, dtype: torch.dtype) -> torch.Tensor:
    """(B, 3, d, h, w) elastic displacements (z, y, x) in stored voxels at every output voxel."""
    grid = p.elastic.to(dtype)
    weights = (
        _interp_matrix(n, k, dtype, grid.device)
        for n, k in zip(p.out_shape, grid.shape[-3:], strict=True)
    )
    return torch.einsum("zi,yj,xk,bcijk->bczyx", *weights, grid)


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
        disp = _displacement(p, dtype)
        coords = [c + disp[:, i] for i, c in enumerate(coords)]
    return coords


def _may_leave(p: BatchParams) -> torch.Tensor:
    """(B,) bool: samples an output voxel of which may read outside the stored block. An affine
    map keeps the output box inside the bounding box of its corners' images, and a trilinear
    displacement never exceeds its largest control value, so False is certain."""
    d, h, w = p.out_shape
    corners = torch.tensor(
        [[z, y, x, 1.0] for z in (0, d - 1) for y in (0, h - 1) for x in (0, w - 1)],
        dtype=p.matrix.dtype,
        device=p.matrix.device,
    )
    c = corners @ p.matrix[:, :3].transpose(1, 2)  # (B, 8, 3) stored coordinates
    lo, hi = c.amin(1), c.amax(1)
    if p.elastic is not None:
        slack = p.elastic.abs().amax(dim=(2, 3, 4))  # (B, 3)
        lo, hi = lo - slack, hi + slack
    top = torch.tensor(p.stored_shape, dtype=c.dtype, device=c.device) - 1
    return ((lo < 0) | (hi > top)).any(1)


def _inside(p: BatchParams) -> torch.Tensor:
    """(B, d, h, w) bool: output voxels whose float64 coordinates lie in the block, the CPU's
    rule."""
    inside = None
    for c, n in zip(_coordinates(p, torch.float64), p.stored_shape, strict=True):
        ok = (c >= 0) & (c <= n - 1)
        inside = ok if inside is None else inside & ok
    return inside


def _grid(p: BatchParams) -> torch.Tensor:
    """(B, d, h, w, 3) float32 sampling grid for ``F.grid_sample`` (x, y, z, normalised): what
    ``F.affine_grid`` computes, written with broadcast elementwise ops. Those never round through
    TF32, which ``affine_grid``'s batched matrix product does on CUDA once a program sets
    ``torch.set_float32_matmul_precision("high")`` (a 10-bit mantissa: 0.05 voxel errors); they
    also make no (B, d, h, w, 4) base grid, a third of the traffic."""
    theta = grid_theta(p).to(torch.float32)
    b, device = len(p), theta.device
    d, h, w = p.out_shape
    axes = [
        torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device)
        if n > 1
        else torch.zeros(1, dtype=torch.float32, device=device)
        for n in (w, h, d)
    ]
    x, y, z = axes[0].view(1, 1, 1, w), axes[1].view(1, 1, h, 1), axes[2].view(1, d, 1, 1)
    grid = torch.empty((b, d, h, w, 3), dtype=torch.float32, device=device)
    for k in range(3):
        t = theta[:, k].view(b, 4, 1, 1, 1)
        torch.add(t[:, 0] * x + t[:, 1] * y + t[:, 3], t[:, 2] * z, out=grid[..., k])
    if p.elastic is not None:  # float64: einsum is a matrix product, TF32 on CUDA in float32
        disp = _displacement(p, torch.float64)
        for k, axis in enumerate((2, 1, 0)):
            n = p.stored_shape[axis]
            grid[..., k] += disp[:, axis] * (2.0 / (n - 1) if n > 1 else 0.0)
    return grid


def _blur(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian (B, d, h, w), same taps and edge rule as the CPU. In float64:
    cuDNN runs float32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``),
    errors of 1e-3 where the backends agree to 1e-4."""
    b = v.shape[0]
    radius = (3.0 * sigma + 0.5).floor()
    r = int(radius.max())
    if r == 0:
        return v
    k = torch.arange(-r, r + 1, dtype=torch.float64, device=v.device).view(1, -1)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma)).view(-1, 1)
    taps = torch.exp(-0.5 * (k / safe) ** 2) * (k.abs() <= radius.view(-1, 1))
    taps = torch.where((radius > 0).view(-1, 1), taps, (k == 0).to(taps.dtype))
    taps = taps / taps.sum(1, keepdim=True)
    x = v.unsqueeze(0).double()  # (1, B, d, h, w): one group per sample
    for axis in (4, 3, 2):  # x, y, z as on the CPU
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = r
        shape = [b, 1, 1, 1, 1]
        shape[axis] = 2 * r + 1
        x = F.conv3d(F.pad(x, pad, mode="replicate"), taps.view(shape), groups=b)
    return x[0].to(v.dtype)


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


def _zero_outside(
    v: torch.Tensor, p: BatchParams, leaving: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``v`` (B, d, h, w) with the voxels read from outside the block set to 0 in the samples
    ``leaving`` (indices, or None for none); returns it and those samples' in-block masks."""
    if leaving is None:
        return v, None
    inside = _inside(p.take(leaving))
    v = v.index_copy(0, leaving, torch.where(inside, v[leaving], 0.0))
    return v, inside


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
        raise BadInput(f"expected image (B, 1, D, H, W) or (B, D, H, W), got {tuple(image.shape)}")
    p = params if isinstance(params, BatchParams) else BatchParams.stack(params)
    device = image.device
    p = p.to(device)
    b = image.shape[0]
    if len(p) != b:
        raise BadInput(f"batch of {b} images but {len(p)} parameter sets")
    if tuple(image.shape[2:]) != p.stored_shape:
        raise ShapeMismatch(
            f"images of shape {tuple(image.shape[2:])} do not match the params' stored block "
            f"{p.stored_shape}"
        )
    mask = batch.get("mask")
    if mask is not None:
        mask = mask[:, 0] if mask.ndim == 5 else mask
        if tuple(mask.shape) != (b, *p.stored_shape):
            raise ShapeMismatch(
                f"mask of shape {tuple(mask.shape)} differs from image {tuple(image.shape)}"
            )
    # one host sync decides which optional steps run and which samples may leave the block
    need = torch.cat(
        [
            torch.stack(
                [
                    (p.gamma != 1).any().double(),
                    (p.contrast != 1).any().double(),
                    (p.noise_std > 0).any().double(),
                    p.blur_sigma.max(),
                ]
            ),
            _may_leave(p).double(),
        ]
    ).cpu()
    leaving_at = torch.nonzero(need[4:]).flatten()
    leaving = leaving_at.to(device) if len(leaving_at) else None

    grid = _grid(p)
    src = image.to(torch.float32)
    v = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
    v, inside = _zero_outside(v, p, leaving)

    def per_sample(value: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float64, device=device)
        return t.expand(b).reshape(b, 1, 1, 1)

    off, sc = per_sample(offset), per_sample(scale)
    gamma, contrast = p.gamma.view(b, 1, 1, 1), p.contrast.view(b, 1, 1, 1)
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
    if mask is not None:
        labels = F.grid_sample(
            mask.unsqueeze(1).to(torch.float32),
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=True,
        )[:, 0]
        if leaving is not None:
            labels = labels.index_copy(0, leaving, torch.where(inside, labels[leaving], 0.0))
        out["mask"] = labels.to(torch.int64)
    if batch.get("points") is not None:
        out.update(_points(batch, p))
    return out
