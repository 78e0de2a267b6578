"""Detection targets, made on the fly from a batch's points after augmentation, never stored.

The trainer sees batches with ``image`` (B, 1, D, H, W) and ``points`` (B, N, 4: z, y, x in the
crop's output voxels, class id) padded to the longest with ``points_count`` (B,); whatever moved
the image (rotations, flips, shifts, elastic) moved the points with it, so a target drawn from
them here follows every augmentation. Nothing here knows how the crop was made (points shards
now, region shards later).

Two kinds, one channel per particle type:

- ``sphere``: a class map (B, D, H, W) int64, 0 background and ``k + 1`` inside a ball of radius
  ``scale * radius[k]`` voxels (at least 1) around each pick of type k (distances in space:
  on anisotropic voxels the ball is an ellipsoid of voxels, ``TargetSpec.spacing``); where
  balls overlap the voxel goes to the pick it is nearest to relative to its ball's radius.
  Train with a cross-entropy over P + 1 channels (background first).
- ``heatmap``: (B, P, D, H, W) float32, per type the maximum over its picks of
  ``exp(-d^2 / (2 sigma^2))``, ``sigma = sigma_scale * radius[k]`` voxels (at least 0.5), ``d``
  measured from the pick's nearest voxel so every pick peaks at exactly 1 (the positives of the
  focal loss); cut at 3 sigma.

Everything is vectorised over the batch's picks (a scatter per particle type) and runs on
whatever device the points are on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from streamvol.errors import BadInput, BadOption

TARGETS = ("sphere", "heatmap")


@dataclass(frozen=True)
class TargetSpec:
    """How targets are drawn: kind, particle radii (mean voxels of the crop, one per type),
    ball radius as a fraction of the particle radius (sphere), sigma as a fraction of it
    (heatmap), the offset between point class ids and particle indices (1 when the shard set's
    class 0 is "background"), and ``spacing``: each axis's voxel size over the mean voxel size
    (z, y, x), so that on anisotropic voxels balls and Gaussians are round in space
    (ellipsoids in voxels)."""

    kind: str
    radii: tuple[float, ...]
    scale: float = 0.5
    sigma_scale: float = 0.25
    point_offset: int = 0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise BadOption("target", self.kind, f"expected one of {', '.join(TARGETS)}")
        if not self.radii or not all(math.isfinite(r) and r > 0 for r in self.radii):
            raise BadInput(f"particle radii: expected positive voxels, got {self.radii}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise BadOption("target_radius", self.scale, "expected a positive fraction")
        if not (math.isfinite(self.sigma_scale) and self.sigma_scale > 0):
            raise BadOption("target_sigma", self.sigma_scale, "expected a positive fraction")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise BadInput(f"voxel spacing: expected 3 positive numbers, got {self.spacing}")
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))

    @property
    def num_types(self) -> int:
        return len(self.radii)

    @property
    def channels(self) -> int:
        """Output channels a model needs: background + one per type (sphere), one per type."""
        return self.num_types + 1 if self.kind == "sphere" else self.num_types

    def ball_radius(self, k: int) -> float:
        """Mean voxels, at least 1 and enough to hold a pick's nearest voxel on any spacing."""
        return max(self.scale * self.radii[k], 1.0, 0.5 * math.hypot(*self.spacing))

    def sigma(self, k: int) -> float:
        return max(self.sigma_scale * self.radii[k], 0.5)


def make_targets(
    points: torch.Tensor, counts: torch.Tensor, shape: Sequence[int], spec: TargetSpec
) -> torch.Tensor:
    """Targets for a batch: ``points`` (B, N, 4), ``counts`` (B,), crop ``shape`` (D, H, W).

    Returns (B, D, H, W) int64 for ``sphere``, (B, P, D, H, W) float32 for ``heatmap``, on the
    points' device. Picks outside the crop simply draw their part inside it. A class id that is
    not a particle type raises ``BadInput``.
    """
    if points.ndim != 3 or points.shape[-1] != 4:
        raise BadInput(f"points: expected (B, N, 4) rows of z, y, x, class, got {points.shape}")
    if counts.shape != points.shape[:1]:
        raise BadInput(f"points_count: expected ({points.shape[0]},), got {tuple(counts.shape)}")
    size = tuple(int(s) for s in shape)
    if len(size) != 3 or min(size) < 1:
        raise BadInput(f"shape: expected (D, H, W) of positive sizes, got {tuple(shape)}")
    device = points.device
    b, zyx, cls = _valid_points(points, counts.to(device), spec)
    batch = points.shape[0]
    if spec.kind == "sphere":
        return _spheres(b, zyx, cls, batch, size, spec)
    return _heatmaps(b, zyx, cls, batch, size, spec)


def _valid_points(
    points: torch.Tensor, counts: torch.Tensor, spec: TargetSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch index, float64 (z, y, x) and particle index of every real (unpadded) point."""
    n = points.shape[1]
    real = torch.arange(n, device=points.device)[None, :] < counts[:, None]
    b, i = real.nonzero(as_tuple=True)
    cls = points[b, i, 3].round().long() - spec.point_offset
    bad = (cls < 0) | (cls >= spec.num_types)
    if bool(bad.any()):
        raw = int(points[b, i, 3][bad][0])
        valid = f"{spec.point_offset}..{spec.point_offset + spec.num_types - 1}"
        raise BadInput(
            f"point class id {raw} is not a particle type; expected ids {valid} "
            f"({spec.num_types} types, offset {spec.point_offset})"
        )
    return b, points[b, i, :3].double(), cls


def _offsets(half: Sequence[int], device: torch.device) -> torch.Tensor:
    """Integer (K, 3) offsets of a box of half-widths ``half`` (z, y, x)."""
    axes = [torch.arange(-h, h + 1, device=device) for h in half]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _neighbourhood(
    zyx: torch.Tensor, reach: float, size: tuple[int, int, int], spacing: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each point (M, 3): the voxels of the box reaching ``reach`` mean voxels around its
    nearest voxel (M, K, 3), their squared distances to the point in mean voxels (M, K), and
    whether each lies inside the crop (M, K)."""
    centre = torch.floor(zyx + 0.5).long()
    half = [math.ceil(reach / s) for s in spacing]
    voxels = centre[:, None, :] + _offsets(half, zyx.device)[None]
    inside = ((voxels >= 0) & (voxels < torch.tensor(size, device=zyx.device))).all(dim=-1)
    step = torch.tensor(spacing, dtype=torch.float64, device=zyx.device)
    d2 = (((voxels.double() - zyx[:, None, :]) * step) ** 2).sum(-1)
    return voxels, d2, inside


def _flat(b: torch.Tensor, voxels: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    d, h, w = size
    return ((b * d + voxels[..., 0]) * h + voxels[..., 1]) * w + voxels[..., 2]


def _spheres(
    b: torch.Tensor,
    zyx: torch.Tensor,
    cls: torch.Tensor,
    batch: int,
    size: tuple[int, int, int],
    spec: TargetSpec,
) -> torch.Tensor:
    device = zyx.device
    n_vox = batch * size[0] * size[1] * size[2]
    labels = torch.zeros(n_vox, dtype=torch.int64, device=device)
    if len(b) == 0:
        return labels.reshape(batch, *size)
    # pass 1: the smallest radius-relative distance reaching each voxel; pass 2: its owner
    best = torch.full((n_vox,), math.inf, dtype=torch.float64, device=device)
    parts = []
    for k in range(spec.num_types):
        sel = cls == k
        if not bool(sel.any()):
            continue
        radius = spec.ball_radius(k)
        voxels, d2, inside = _neighbourhood(zyx[sel], radius, size, spec.spacing)
        keep = inside & (d2 <= radius * radius)
        flat = _flat(b[sel][:, None], voxels, size)[keep]
        rel = (d2[keep].sqrt() / radius).to(torch.float64)
        best.scatter_reduce_(0, flat, rel, reduce="amin")
        parts.append((flat, rel, k + 1))
    for flat, rel, label in parts:
        own = rel <= best[flat]
        labels[flat[own]] = label
    return labels.reshape(batch, *size)


def _heatmaps(
    b: torch.Tensor,
    zyx: torch.Tensor,
    cls: torch.Tensor,
    batch: int,
    size: tuple[int, int, int],
    spec: TargetSpec,
) -> torch.Tensor:
    device = zyx.device
    p = spec.num_types
    heat = torch.zeros(batch * p * size[0] * size[1] * size[2], dtype=torch.float32, device=device)
    for k in range(p):
        sel = cls == k
        if not bool(sel.any()):
            continue
        sigma = spec.sigma(k)
        centres = torch.floor(zyx[sel] + 0.5)  # peaks of exactly 1 on the nearest voxel
        voxels, d2, inside = _neighbourhood(centres, 3 * sigma, size, spec.spacing)
        keep = inside & (d2 <= (3 * sigma) ** 2)
        flat = _flat(b[sel][:, None] * p + k, voxels, size)[keep]
        value = torch.exp(-d2[keep] / (2 * sigma * sigma)).float()
        heat.scatter_reduce_(0, flat, value, reduce="amax")
    return heat.reshape(batch, p, *size)
