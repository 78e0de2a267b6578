"""Region shard sets: each volume stored once (or as a few overlapping tiles), crops drawn later.

A points plan stores one block per pick, each with the crop plus its rotation margin: dense picks
in a tomogram cost ~90x the source bytes, and every epoch sees the same centres. A region plan
stores each volume once, with its picks, mask and class, and counts the crops an epoch draws from
it: one per pick in its core (``per_point``), ``negatives`` per pick away from every pick, and
``crops_per_region`` uniform ones. The loader draws their positions afresh every epoch
(``streamvol.stream.draw``).

A volume larger than ``region_max`` bytes is cut into tiles. Their cores partition the volume;
each tile also stores ``reach`` voxels beyond its core on interior sides (half a crop plus the
rotation margin and the largest shift), so any crop centred in a core, turned any way, reads
from its own tile. At the volume's own edges nothing is stored beyond it: the loader pads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamvol.core.geometry import inside
from streamvol.errors import BadOption
from streamvol.shard.plan import Crop, PlanSource, Zyx

__all__ = ["RegionPlan", "Tile", "plan_regions", "tile_volume"]


@dataclass(frozen=True)
class Tile:
    """One stored region: a box of a volume, the core whose crops it serves, and its units.

    ``start``/``stop`` and ``core_start``/``core_stop`` are volume voxels; ``points`` (N, 4)
    float32 z, y, x (region voxels), class: the picks in the core first (``core_points`` of
    them), then those in the rest of the stored box. ``units`` counts the crops an epoch draws:
    per pick, negatives, uniform.
    """

    source: str
    start: Zyx
    stop: Zyx
    core_start: Zyx
    core_stop: Zyx
    volume_shape: Zyx
    label: int = -1
    points: np.ndarray | None = field(default=None, compare=False)
    core_points: int = 0
    units: tuple[int, int, int] = (0, 0, 0)

    @property
    def key(self) -> str:
        z, y, x = self.start
        return f"{self.source}_z{z}_y{y}_x{x}"

    @property
    def shape(self) -> Zyx:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def n_units(self) -> int:
        return sum(self.units)

    def unit_labels(self) -> list[int]:
        """The class of each unit: its pick's, background (0) for negatives, the region's for
        uniform crops (-1 when it has none)."""
        per_point, negatives, uniform = self.units
        picks = [] if self.points is None else self.points[:per_point, 3].astype(int).tolist()
        return picks + [0] * negatives + [self.label] * uniform

    def as_crop(self) -> Crop:
        """A stand-in crop (source, start, class) for the grouped, stratified splitter."""
        return Crop(self.source, self.start, self.label)


@dataclass(frozen=True)
class RegionPlan:
    """The tiles of every source, in source order, and the class names their units use."""

    tiles: tuple[Tile, ...]
    class_names: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def n_units(self) -> int:
        return sum(t.n_units for t in self.tiles)


def tile_volume(
    shape: Sequence[int], itemsize: int, region_max: int, reach: Sequence[int]
) -> list[tuple[Zyx, Zyx, Zyx, Zyx]]:
    """(start, stop, core_start, core_stop) of the tiles of a volume: one when it fits
    ``region_max`` bytes, else the fewest even cuts (longest core axis first) whose stored
    boxes (core plus ``reach`` on interior sides) each fit."""
    shape = tuple(int(n) for n in shape)
    cuts = [1, 1, 1]

    def boxes() -> list[tuple[Zyx, Zyx, Zyx, Zyx]]:
        per_axis = []
        for n, k, r in zip(shape, cuts, reach, strict=True):
            edges = [n * i // k for i in range(k + 1)]
            per_axis.append(
                [(max(a - r, 0), min(b + r, n), a, b) for a, b in itertools.pairwise(edges)]
            )
        out = []
        for z in per_axis[0]:
            for y in per_axis[1]:
                for x in per_axis[2]:
                    out.append(tuple(tuple(axis[i] for axis in (z, y, x)) for i in range(4)))
        return out  # type: ignore[return-value]

    while True:
        tiles = boxes()
        biggest = max(math.prod(b - a for a, b in zip(t[0], t[1], strict=True)) for t in tiles)
        if biggest * itemsize <= region_max:
            return tiles
        cores = [n / k for n, k in zip(shape, cuts, strict=True)]
        axis = int(np.argmax(cores))
        if shape[axis] // (cuts[axis] + 1) <= max(reach[axis], 1):
            # a core no wider than the overlap: two stored boxes would start at the volume's edge
            smallest = math.prod(min(n, 2 * r + 1) for n, r in zip(shape, reach, strict=True))
            raise BadOption(
                "region_max",
                region_max,
                f"a volume of shape {shape} cannot be tiled into regions of that many bytes "
                f"with {list(reach)} voxels of overlap (each region's core would be no wider "
                f"than its overlap); expected at least {smallest * itemsize} bytes",
            )
        cuts[axis] += 1


def plan_regions(
    sources: Sequence[PlanSource],
    *,
    itemsize: int,
    region_max: int,
    reach: Sequence[int],
    per_point: bool = True,
    negatives: float = 0.0,
    crops_per_region: int = 0,
    class_names: Sequence[str] = (),
) -> RegionPlan:
    """The tiles of every source and the units an epoch draws from each (see module doc).

    Picks belong to the tile whose core holds their nearest voxel. With ``negatives`` > 0 the
    pick classes move up by one and class 0 is "background", as in the points plan.
    """
    if negatives < 0 or not math.isfinite(negatives):
        raise BadOption("negatives", negatives, "expected a finite ratio >= 0")
    if crops_per_region < 0:
        raise BadOption("crops_per_region", crops_per_region, "expected a count >= 0")
    offset = 1 if negatives > 0 else 0
    names = ("background", *class_names) if offset else tuple(class_names)
    tiles: list[Tile] = []
    notes: list[str] = []
    for source in sources:
        points = source.points
        labels = source.point_labels
        rounded = None
        if points is not None and len(points):
            shape = np.asarray(source.shape)
            outside = ((points < -0.5) | (points >= shape)).any(axis=1)
            if outside.any():
                from streamvol.errors import PointsOutsideVolume

                i = int(np.flatnonzero(outside)[0])
                raise PointsOutsideVolume(
                    f"source {source.id!r}: point {i} at zyx {tuple(points[i].tolist())} lies "
                    f"outside the volume of shape {source.shape}; expected voxel coordinates "
                    "in [-0.5, shape)"
                )
            rounded = np.minimum(np.floor(points + 0.5).astype(np.int64), shape - 1)
        for start, stop, core_start, core_stop in tile_volume(
            source.shape, itemsize, region_max, reach
        ):
            region_points, n_core = None, 0
            if points is not None:
                a, b = np.asarray(start), np.asarray(stop)
                ca, cb = np.asarray(core_start), np.asarray(core_stop)
                if rounded is None:
                    in_core = in_box = np.zeros(0, bool)
                else:
                    in_core = ((rounded >= ca) & (rounded < cb)).all(axis=1)
                    in_box = inside(points, a, b) & ~in_core
                order = np.concatenate([np.flatnonzero(in_core), np.flatnonzero(in_box)])
                region_points = np.zeros((len(order), 4), np.float32)
                if len(order):
                    region_points[:, :3] = points[order] - a
                    region_points[:, 3] = labels[order] + offset
                n_core = int(in_core.sum())
            units = (
                n_core if per_point else 0,
                math.floor(negatives * n_core + 0.5),
                int(crops_per_region),
            )
            tiles.append(
                Tile(
                    source=source.id,
                    start=start,
                    stop=stop,
                    core_start=core_start,
                    core_stop=core_stop,
                    volume_shape=source.shape,
                    label=source.label,
                    points=region_points,
                    core_points=n_core,
                    units=units,
                )
            )
    empty = [t.key for t in tiles if not t.n_units]
    if empty:
        notes.append(
            f"{len(empty)} regions draw no crops (no picks in their core and no "
            f"--crops-per-region), first: {empty[0]}"
        )
    return RegionPlan(tuple(tiles), names, tuple(notes))
