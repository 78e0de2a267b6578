"""Where and what to crop: the plan a shard set is written from.

A plan is a sorted tuple of crops, each a source id, a centre voxel and a class label: a grid over
each volume, crops centred on picked points (plus background crops kept away from them), or one
crop per sample. Nothing here opens a file, so a plan is cheap to make, test and print; the writer
reads the voxels later, and pads where a stored block reaches outside its volume.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamvol.core.geometry import Zyx, as_zyx, crop_box, parse_zyx, rotation_margin
from streamvol.errors import BadInput, BadLabels, BadOption, CropTooLarge, PointsOutsideVolume

__all__ = [
    "Crop",
    "Plan",
    "PlanSource",
    "as_zyx",
    "crop_box",
    "plan_grid",
    "plan_points",
    "plan_samples",
    "rotation_margin",
]


_KEY_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_NEGATIVE_TRIES = 100  # random candidates drawn per background crop asked for, before giving up
_DISTANCE_CELLS = 2**18  # candidates x points per block when measuring distances (memory bound)


@functools.lru_cache(maxsize=4096)
def _key_safe(source: str) -> bool:
    return _KEY_SAFE.fullmatch(source) is not None


def _check_source_id(source: object) -> str:
    if not isinstance(source, str) or not _key_safe(source):
        raise BadInput(
            f"expected a source id of letters, digits, '_' and '-' (no dots: WebDataset cuts a "
            f"key at its first dot), got {source!r}"
        )
    return source


@dataclass(frozen=True, slots=True)
class Crop:
    """One crop of a plan: which source, the (z, y, x) voxel it is centred on, and its class.

    ``label`` is -1 when the crop has no class (segmentation or unlabelled detection).
    """

    source: str
    centre: Zyx
    label: int = -1

    def __post_init__(self) -> None:
        _check_source_id(self.source)
        centre = self.centre
        if not (type(centre) is tuple and len(centre) == 3 and all(type(v) is int for v in centre)):
            if len(centre) != 3:
                raise BadInput(f"expected a (z, y, x) centre, got {centre!r}")
            object.__setattr__(self, "centre", tuple(int(v) for v in centre))
        if type(self.label) is not int:
            object.__setattr__(self, "label", int(self.label))

    @property
    def key(self) -> str:
        """The WebDataset sample key, ``<source>_z<z>_y<y>_x<x>``; it never holds a dot."""
        z, y, x = self.centre
        return f"{self.source}_z{z}_y{y}_x{x}"


@dataclass(frozen=True, eq=False)
class PlanSource:
    """What the planner knows about one source: its id, shape, class, and picked points.

    ``points`` are (N, 3) float (z, y, x) voxels; ``point_labels`` (N,) class ids (default 0);
    ``point_radii`` (N,) the particle radius in voxels (default 0). Arrays are copied read-only.
    """

    id: str
    shape: Zyx
    label: int = -1
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    point_radii: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_source_id(self.id)
        object.__setattr__(self, "shape", parse_zyx(self.shape, "a shape", minimum=1, name="shape"))
        if isinstance(self.label, bool) or not isinstance(self.label, int | np.integer):
            raise BadLabels(f"source {self.id!r}: expected an int class id, got {self.label!r}")
        if self.label < -1:
            raise BadLabels(f"source {self.id!r}: expected a class id >= -1, got {self.label}")
        object.__setattr__(self, "label", int(self.label))
        if self.points is None:
            if self.point_labels is not None or self.point_radii is not None:
                raise BadLabels(f"source {self.id!r}: point labels or radii given without points")
            return
        points = _frozen(np.asarray(self.points, dtype=np.float64))
        if points.ndim != 2 or points.shape[1] != 3:
            raise BadLabels(
                f"source {self.id!r}: expected (N, 3) z, y, x points, got shape {points.shape}"
            )
        if not np.isfinite(points).all():
            index = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
            raise BadLabels(f"source {self.id!r}: point {index} is not finite: {points[index]}")
        n = len(points)
        labels = np.zeros(n, np.int64) if self.point_labels is None else self.point_labels
        labels_arr = np.asarray(labels)
        if labels_arr.shape != (n,) or not (np.issubdtype(labels_arr.dtype, np.integer) or n == 0):
            raise BadLabels(
                f"source {self.id!r}: expected {n} integer point labels, "
                f"got {labels_arr.dtype} of shape {labels_arr.shape}"
            )
        radii = np.zeros(n) if self.point_radii is None else self.point_radii
        radii_arr = np.asarray(radii, dtype=np.float64)
        if radii_arr.shape != (n,) or not (np.isfinite(radii_arr) & (radii_arr >= 0)).all():
            raise BadLabels(
                f"source {self.id!r}: expected {n} finite point radii >= 0, "
                f"got shape {radii_arr.shape}"
            )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "point_labels", _frozen(labels_arr.astype(np.int64)))
        object.__setattr__(self, "point_radii", _frozen(radii_arr))


def _frozen(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Plan:
    """The crops to write, in (source order, z, y, x) order so a shard reads each chunk once.

    ``warnings`` records what the planner had to give up (duplicate picks, too few negatives).
    """

    crops: tuple[Crop, ...]
    class_names: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.crops)


def plan_grid(
    sources: Sequence[PlanSource],
    crop: int | str | Sequence[int],
    *,
    stride: int | str | Sequence[int] | None = None,
    pad: bool = False,
    class_names: Sequence[str] = (),
) -> Plan:
    """Tile each volume with crops every ``stride`` voxels (default: the crop, no overlap).

    Tiles start at 0, and a last tile sits flush with the far edge when the volume is not a
    multiple, so the whole volume is covered (with stride <= crop). Each crop carries its source's
    label. An axis shorter than the crop raises ``CropTooLarge``, or with ``pad`` gets one tile
    centred on the volume.
    """
    size = as_zyx(crop)
    step = size if stride is None else parse_zyx(stride, "a stride", minimum=1, name="stride")
    names = tuple(class_names)
    checked = _check_sources(sources)
    crops: list[Crop] = []
    for source in checked:
        _check_label(source.id, source.label, names)
        _check_fits(source, size, pad)
        axes = [_grid_centres(n, c, s) for n, c, s in zip(source.shape, size, step, strict=True)]
        crops.extend(Crop(source.id, zyx, source.label) for zyx in itertools.product(*axes))
    return _finish(checked, crops, names, ())


def _grid_centres(length: int, crop: int, step: int) -> list[int]:
    if crop > length:
        return [length // 2]
    starts = list(range(0, length - crop + 1, step))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return [s + crop // 2 for s in starts]


def plan_samples(
    sources: Sequence[PlanSource],
    crop: int | str | Sequence[int],
    *,
    class_names: Sequence[str] = (),
) -> Plan:
    """One crop per source, centred on the volume (``shape // 2``), labelled with its class.

    A crop larger than its volume is still one crop: the writer pads it.
    """
    as_zyx(crop)
    names = tuple(class_names)
    checked = _check_sources(sources)
    crops = []
    for source in checked:
        _check_label(source.id, source.label, names)
        centre = tuple(n // 2 for n in source.shape)
        crops.append(Crop(source.id, centre, source.label))  # type: ignore[arg-type]
    return _finish(checked, crops, names, ())


def plan_points(
    sources: Sequence[PlanSource],
    crop: int | str | Sequence[int],
    *,
    negatives: float = 0.0,
    class_names: Sequence[str],
    pad: bool = False,
    seed: int = 0,
    min_distance: float | None = None,
) -> Plan:
    """One crop centred on each picked point, plus random background crops away from them.

    Centres are points rounded to the nearest voxel (half up, ``floor(p + 0.5)``; a point in the
    last half voxel ``[shape - 0.5, shape)`` goes to the last voxel); a point outside
    ``[-0.5, shape)`` raises ``PointsOutsideVolume``. With ``negatives=R > 0``
    each source also gets ``round(R * its number of points)`` background crops, class 0
    ("background", the point classes shifted by one), centred at least ``radius + min_distance``
    voxels from every point and, without ``pad``, with the crop inside the volume. Negatives are
    drawn from a generator keyed by ``(seed, source id)``, so a source's negatives do not depend on
    the other sources. Without ``pad``, a point whose crop leaves the volume raises
    ``CropTooLarge``.
    """
    size = as_zyx(crop)
    rate = float(negatives)
    if not (math.isfinite(rate) and rate >= 0):
        raise BadOption("negatives", negatives, "expected a finite ratio >= 0")
    distance = 0.0 if min_distance is None else float(min_distance)
    if not (math.isfinite(distance) and distance >= 0):
        raise BadOption("min_distance", min_distance, "expected a finite number >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise BadOption("seed", seed, "expected an int >= 0")
    offset = 1 if rate > 0 else 0
    names = ("background", *class_names) if offset else tuple(class_names)
    checked = _check_sources(sources)
    crops: list[Crop] = []
    notes: list[str] = []
    for source in checked:
        if source.points is None or len(source.points) == 0:
            continue
        centres, labels, dropped = _point_centres(source, size, pad, len(class_names))
        if dropped:
            notes.append(dropped)
        crops.extend(
            Crop(source.id, tuple(c), int(lab) + offset)  # type: ignore[arg-type]
            for c, lab in zip(centres.tolist(), labels.tolist(), strict=True)
        )
        wanted = math.floor(rate * len(source.points) + 0.5)
        if wanted:
            found, note = _draw_negatives(source, size, wanted, pad, int(seed), distance, centres)
            if note:
                notes.append(note)
            crops.extend(Crop(source.id, tuple(c), 0) for c in found.tolist())  # type: ignore[arg-type]
    return _finish(checked, crops, names, tuple(notes))


def _point_centres(
    source: PlanSource, size: Zyx, pad: bool, n_classes: int
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Validated, deduplicated crop centres and labels of a source's points (first kept)."""
    assert source.points is not None and source.point_labels is not None  # set by PlanSource
    points, labels = source.points, source.point_labels
    shape = np.asarray(source.shape)
    # Inside means [-0.5, shape) on each axis: voxel i spans [i - 0.5, i + 0.5) or [i, i + 1)
    # depending on the convention of the pick file, so accept both and clip the rounded centre.
    outside = ((points < -0.5) | (points >= shape)).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise PointsOutsideVolume(
            f"source {source.id!r}: point {i} at zyx {tuple(points[i].tolist())} lies outside "
            f"the volume of shape {source.shape} ({int(outside.sum())} of {len(points)} points "
            f"outside); expected voxel coordinates in [-0.5, shape)"
        )
    centres = np.minimum(np.floor(points + 0.5).astype(np.int64), shape - 1)
    bad = (labels < 0) | (labels >= n_classes) if n_classes else labels < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        expected = f"0..{n_classes - 1}" if n_classes else ">= 0"
        raise BadLabels(
            f"source {source.id!r}: point {i} has class {int(labels[i])}, expected {expected}"
        )
    if not pad:
        start = centres - np.asarray(size) // 2
        misfit = ((start < 0) | (start + np.asarray(size) > shape)).any(axis=1)
        if misfit.any():
            i = int(np.flatnonzero(misfit)[0])
            raise CropTooLarge(
                f"source {source.id!r}: crop {size} centred on point {i} at voxel "
                f"{tuple(centres[i].tolist())} does not fit the volume of shape {source.shape} "
                f"({int(misfit.sum())} of {len(points)} points); pass pad=True to pad at borders"
            )
    _, first = np.unique(centres, axis=0, return_index=True)
    if len(first) == len(centres):
        return centres, labels, None
    keep = np.zeros(len(centres), bool)
    keep[first] = True
    i = int(np.flatnonzero(~keep)[0])
    note = (
        f"source {source.id!r}: {int((~keep).sum())} points round to the centre of an earlier "
        f"point (first: point {i} at voxel {tuple(centres[i].tolist())}); kept the first of each"
    )
    return centres[keep], labels[keep], note


def _draw_negatives(
    source: PlanSource,
    size: Zyx,
    wanted: int,
    pad: bool,
    seed: int,
    distance: float,
    taken: np.ndarray,
) -> tuple[np.ndarray, str | None]:
    """Up to ``wanted`` random centres clear of every point, drawn in vectorised batches."""
    assert source.points is not None and source.point_radii is not None  # set by PlanSource
    shape, half = np.asarray(source.shape), np.asarray(size) // 2
    low = np.zeros(3, np.int64) if pad else half
    high = shape - 1 if pad else shape - np.asarray(size) + half  # inclusive
    reach = source.point_radii + distance
    rng = np.random.default_rng(np.random.SeedSequence([seed, _stable_hash(source.id)]))
    seen = {tuple(c) for c in taken.tolist()}
    found: list[tuple[int, ...]] = []
    budget, drawn = _NEGATIVE_TRIES * wanted, 0
    while len(found) < wanted and drawn < budget and (low <= high).all():
        batch = min(budget - drawn, max(4 * (wanted - len(found)), 1024))
        candidates = rng.integers(low, high + 1, size=(batch, 3))
        drawn += batch
        for centre in candidates[_clear_of(candidates, source.points, reach)].tolist():
            key = tuple(centre)
            if key not in seen:
                seen.add(key)
                found.append(key)
                if len(found) == wanted:
                    break
    centres = np.asarray(found, np.int64).reshape(-1, 3)
    if len(found) == wanted:
        return centres, None
    where = "" if pad else ", with the crop inside the volume,"
    return centres, (
        f"source {source.id!r}: placed {len(found)} of {wanted} background crops; no more "
        f"voxels{where} at least radius + {distance:g} from every point after {drawn} random tries"
    )


def _clear_of(candidates: np.ndarray, points: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Which candidates lie at least ``reach[i]`` from every point i (exact differences)."""
    ok = np.ones(len(candidates), bool)
    block = max(1, _DISTANCE_CELLS // max(len(points), 1))
    limit = reach * reach
    for at in range(0, len(candidates), block):
        part = candidates[at : at + block, None, :] - points[None, :, :]
        ok[at : at + block] = (np.einsum("cpk,cpk->cp", part, part) >= limit).all(axis=1)
    return ok


def _stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _check_sources(sources: Sequence[PlanSource]) -> list[PlanSource]:
    checked = list(sources)
    if not checked:
        raise BadInput("expected at least one source to plan, got none")
    seen: set[str] = set()
    for source in checked:
        if not isinstance(source, PlanSource):
            raise TypeError(f"expected PlanSource, got {type(source).__name__}")
        if source.id in seen:
            raise BadInput(f"source id {source.id!r} appears twice; expected unique ids")
        seen.add(source.id)
    return checked


def _check_label(source_id: str, label: int, names: tuple[str, ...]) -> None:
    if names and label >= len(names):
        raise BadLabels(
            f"source {source_id!r}: class {label} but only {len(names)} class names {names}; "
            f"expected -1..{len(names) - 1}"
        )


def _check_fits(source: PlanSource, size: Zyx, pad: bool) -> None:
    if pad:
        return
    for axis, (n, c) in enumerate(zip(source.shape, size, strict=True)):
        if c > n:
            raise CropTooLarge(
                f"source {source.id!r}: crop {size} exceeds the volume of shape {source.shape} "
                f"on axis {'zyx'[axis]}; pass pad=True to pad it"
            )


def _finish(
    sources: list[PlanSource],
    crops: list[Crop],
    names: tuple[str, ...],
    notes: tuple[str, ...],
) -> Plan:
    """Sort by (source order, z, y, x) and check that every key is unique."""
    order = {source.id: i for i, source in enumerate(sources)}
    crops = sorted(crops, key=lambda c: (order[c.source], c.centre))
    for before, after in itertools.pairwise(crops):
        if before.source == after.source and before.centre == after.centre:
            raise BadInput(f"crop key {after.key!r} appears twice; expected unique keys")
    return Plan(tuple(crops), names, notes)
