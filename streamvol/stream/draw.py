"""Draw the crops of a region set: a new position every epoch, cut from the stored region.

A unit ``(region, j)`` of the epoch is, by ``j``: a crop centred on the region's ``j``-th core
pick, moved by up to ``max_shift`` voxels per axis; a negative, centred at a random core voxel at
least a particle radius from every pick; or a uniform crop, centred anywhere in the core. Every
position comes from ``(seed, epoch, region key, j)``: new each epoch, the same in any worker.

The cut is the crop plus the margin the augmentation needs, as a stored sample of a points set
would hold, so the rest of the loader treats it as one. Where it reaches past the volume's edge
it is padded here, as ``--pad`` says (``np.pad``'s reflect or zero); regions store no padding.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamvol.core.geometry import inside
from streamvol.core.rng import key_hash, keyed_rng
from streamvol.errors import ShardError

POSITION = 0x9051  # stream id: positions never coincide with the augmentation's draws
NEGATIVE_TRIES = 64  # candidates for a negative; the farthest from the picks if none is clear

Zyx = tuple[int, int, int]


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Indices past ``[0, n)`` mirrored about the edge voxels, as ``np.pad(mode="reflect")``
    reads them (``-1 -> 1``, ``n -> n - 2``, repeatedly for wide pads; one voxel: itself)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded > n - 1, period - folded, folded)


def _runs(index: np.ndarray) -> list[tuple[slice, slice | None]]:
    """(output slice, source slice or None for zeros) of each run of ``index`` that steps by
    +1 or -1 (-1 marks a zero-padded voxel): a padded cut is a few slice copies, not a gather."""
    out: list[tuple[slice, slice | None]] = []
    i, n = 0, len(index)
    while i < n:
        j = i + 1
        if index[i] < 0:
            while j < n and index[j] < 0:
                j += 1
            out.append((slice(i, j), None))
        else:
            step = index[i + 1] - index[i] if j < n and index[j] >= 0 else 1
            step = step if step in (1, -1) else 1
            while j < n and index[j] >= 0 and index[j] - index[j - 1] == step:
                j += 1
            first, last = int(index[i]), int(index[j - 1])
            stop = last + step if last + step >= 0 else None
            out.append((slice(i, j), slice(first, stop, step)))
        i = j
    return out


def _indices(
    shape: Zyx, start: Zyx, size: Zyx, origin: Zyx, volume_shape: Zyx, pad: str, where: str
) -> list[np.ndarray]:
    """Per axis, the stored region's index of each voxel of ``size`` voxels from ``start``
    (region voxels), padded as the whole volume would be (-1: a zero-padded voxel)."""
    axes = []
    for axis, (s, n, o, full) in enumerate(zip(start, size, origin, volume_shape, strict=True)):
        low = s < 0 and o > 0
        high = s + n > shape[axis] and o + shape[axis] < full
        if low or high:
            raise ShardError(
                f"{where}: a crop of {list(size)} at {list(start)} reaches past the stored "
                f"region {list(shape)} on axis {'zyx'[axis]}, inside the volume; the region "
                "set was made for a smaller crop or margin (reshard with --context auto for "
                "this augmentation)"
            )
        volume_index = np.arange(s + o, s + o + n)
        if pad == "zero":
            axes.append(np.where((volume_index >= 0) & (volume_index < full), volume_index - o, -1))
        else:
            axes.append(reflect_index(volume_index, full) - o)
    return axes


def cut(
    array: np.ndarray,
    start: Zyx,
    size: Zyx,
    origin: Zyx,
    volume_shape: Zyx,
    pad: str,
    where: str = "region",
) -> np.ndarray:
    """``size`` voxels of the volume from ``start`` (region voxels) out of ``array``, the
    region stored at ``origin`` of a volume of ``volume_shape``: a plain slice inside it, padded
    as the whole volume would be (``pad`` "reflect" or "zero", as ``np.pad``) past the volume's
    edge."""
    shape = array.shape
    inside = all(s >= 0 and s + n <= m for s, n, m in zip(start, size, shape, strict=True))
    if inside:
        return array[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))]
    indices = _indices(shape, start, size, origin, volume_shape, pad, where)
    out = np.empty(size, array.dtype)
    for (oz, sz), (oy, sy), (ox, sx) in itertools.product(*map(_runs, indices)):
        if sz is None or sy is None or sx is None:
            out[oz, oy, ox] = 0
        else:
            out[oz, oy, ox] = array[sz, sy, sx]
    return out


@dataclass(frozen=True)
class Window:
    """A stored block not cut yet: ``size`` voxels from ``start`` of a region (region voxels),
    padded past the volume's edge when cut. The CPU augmentation cuts only the part its drawn
    geometry reads (``AugmentParams.reads``): a free rotation of a cube reads about half of the
    block its margin allows for."""

    region: np.ndarray
    start: Zyx
    size: Zyx
    origin: Zyx
    volume_shape: Zyx
    pad: str
    where: str = "region"

    @property
    def shape(self) -> Zyx:
        return self.size

    def cut(self, start: Zyx = (0, 0, 0), stop: Zyx | None = None) -> np.ndarray:
        """The block's part ``[start, stop)`` (block voxels; default: all of it)."""
        stop = self.size if stop is None else stop
        corner = tuple(a + b for a, b in zip(self.start, start, strict=True))
        size = tuple(b - a for a, b in zip(start, stop, strict=True))
        return cut(self.region, corner, size, self.origin, self.volume_shape, self.pad, self.where)

    def stats(self) -> tuple[float, float, float]:
        """The whole block's raw min, max and mean (``block_stats`` of ``cut()``), read from the
        region without cutting: each stored voxel weighted by how often the padding repeats it,
        zero padding counted as zeros."""
        from streamvol.augment import block_stats

        shape = self.region.shape
        indices = _indices(
            shape, self.start, self.size, self.origin, self.volume_shape, self.pad, self.where
        )
        kept = [index[index >= 0] for index in indices]
        if not all(len(k) for k in kept):  # wholly in the zero padding
            return 0.0, 0.0, 0.0
        view = tuple(slice(k.min(), k.max() + 1) for k in kept)
        weights = [np.bincount(k - k.min()) for k in kept]
        low, high, mean = block_stats(self.region[view], weights)
        stored, total = np.prod([len(k) for k in kept]), np.prod(self.size)
        if stored < total:  # zero padding: zeros make up the rest
            low, high, mean = min(low, 0.0), max(high, 0.0), mean * float(stored / total)
        return low, high, mean


@dataclass(frozen=True)
class DrawCrop:
    """Turn a unit of a region set into a stored sample whose image (and mask) are ``Window``s
    (picklable stage settings).

    ``margin``: voxels kept around the crop for the augmentation (0 without); ``pad``: reflect,
    zero, or none (crops then move inside the volume); ``radii``: the particle radius of each
    class id, in voxels, for the negatives' distance.
    """

    crop: Zyx
    margin: Zyx = (0, 0, 0)
    pad: str = "reflect"
    max_shift: int = 0
    radii: tuple[float, ...] = ()
    seed: int = 0

    def position(
        self, meta: dict[str, Any], points: np.ndarray | None, j: int, epoch: int
    ) -> tuple[np.ndarray, int]:
        """The centre (region voxels) and class of unit ``j`` in ``epoch``."""
        rng = keyed_rng(self.seed, epoch, key_hash(meta["key"]), j, POSITION)
        per_point, negatives, _ = meta["units"]
        core = np.asarray(meta["core"], dtype=np.int64)  # (3, 2) region voxels
        if j < per_point:
            assert points is not None  # a region with per-point units holds its picks
            centre = np.floor(points[j, :3] + 0.5).astype(np.int64)
            if self.max_shift:
                centre += rng.integers(-self.max_shift, self.max_shift + 1, size=3)
            return centre, int(points[j, 3])
        candidates = rng.integers(core[:, 0], core[:, 1], size=(NEGATIVE_TRIES, 3))
        if j >= per_point + negatives:
            return candidates[0], int(meta["label"])
        if points is None or not len(points):
            return candidates[0], 0
        reach = np.maximum(self._radii_of(points[:, 3]), 1.0)
        gaps = (
            np.sqrt(((candidates[:, None, :] - points[None, :, :3]) ** 2).sum(axis=-1))
            - reach[None, :]
        )
        clear = gaps.min(axis=1)
        first = np.flatnonzero(clear >= 0)
        return candidates[first[0] if len(first) else int(np.argmax(clear))], 0

    def _radii_of(self, classes: np.ndarray) -> np.ndarray:
        table = np.asarray(self.radii, dtype=np.float64)
        ids = classes.astype(np.int64)
        if not len(table):
            return np.zeros(len(ids))
        return np.where((ids >= 0) & (ids < len(table)), table[np.clip(ids, 0, len(table) - 1)], 0)

    def __call__(self, unit: dict[str, Any], epoch: int) -> dict[str, Any]:
        region = unit["__region__"]
        meta = region["json"]
        points = region.get("points.npy")
        centre, label = self.position(meta, points, unit["__unit__"], epoch)
        size = tuple(c + 2 * m for c, m in zip(self.crop, self.margin, strict=True))
        start = tuple(
            int(c) - k // 2 - m for c, k, m in zip(centre, self.crop, self.margin, strict=True)
        )
        origin = tuple(meta["origin"])
        full = tuple(meta["volume_shape"])
        if self.pad == "none":  # no padding: the crop moves inside the volume where it can
            start = tuple(
                min(max(s, -o), f - o - n) if f >= n else s
                for s, o, f, n in zip(start, origin, full, size, strict=True)
            )
        where = f"region {meta['key']}"
        pad = "zero" if self.pad == "zero" else "reflect"
        out: dict[str, Any] = {
            "__key__": unit["__key__"],
            "__pos__": unit["__pos__"],
            "weight": unit["weight"],
            "image.npy": Window(region["image.npy"], start, size, origin, full, pad, where),
        }
        if "mask.npy" in region:
            out["mask.npy"] = Window(region["mask.npy"], start, size, origin, full, pad, where)
        if points is not None:
            moved = points.copy()
            moved[:, :3] -= np.asarray(start, dtype=np.float32)
            out["points.npy"] = moved[inside(moved, (0, 0, 0), size)]
        if label >= 0:
            out["cls"] = label
        return out
