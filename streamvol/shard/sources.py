"""Before writing: discover and open the sources, check them, and plan the crops (``prepare``).
Everything here that can fail on bad input fails before the first byte of a shard set."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.errors import BadLabels, BadOption, LargeCropWarning, NoVolumeFound, ShardError
from streamvol.io import (
    ClassTable,
    Dataset,
    Volume,
    discover,
    load_points,
    open_mask,
    open_volume,
    read_class_csv,
    source_id,
)
from streamvol.shard.config import ShardConfig
from streamvol.shard.manifest import intensity_stats
from streamvol.shard.plan import Crop, Plan, PlanSource, plan_grid, plan_points, plan_samples
from streamvol.shard.regions import RegionPlan, Tile, plan_regions
from streamvol.shard.write import ShardSource

__all__ = ["Prepared", "folds_stats", "plan_items", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """The sources opened and checked, and the plan made from them: all a run needs before
    its first byte."""

    dataset_roots: tuple[str, ...]
    sources: dict[str, ShardSource]
    source_meta: list[dict[str, Any]]
    plan: Plan | RegionPlan
    task: str
    stats: dict[str, float] | None  # None: gathered as regions are written (``folds_stats``)
    itemsize: int  # bytes of a stored voxel
    margin: tuple[int, int, int]  # stored context a side, voxels (``ShardConfig.margin_for``)
    voxel_size: tuple[float, ...] | None  # the sources' one voxel size, None when unknown or mixed
    radii: dict[str, float] = field(default_factory=dict)  # particle radii, Angstrom (copick)
    weights: dict[str, float] = field(default_factory=dict)  # score weights (copick config)
    mask_names: tuple[str, ...] = ()  # the class of each mask label, where the sources name them


def plan_items(plan: Plan | RegionPlan) -> tuple[Crop, ...] | tuple[Tile, ...]:
    """What a plan writes: crops, or regions."""
    return plan.tiles if isinstance(plan, RegionPlan) else plan.crops


def folds_stats(config: ShardConfig) -> bool:
    """Whether the write pass gathers the intensity statistics instead of a pass before it.

    A region set stores every voxel once, so reading the sources twice would halve the
    sharder's speed; each region is then checked (NaN, Inf, float16 range) just before its tar
    is written, so a bad volume is refused after other shards may be finished (kept for a
    rerun), never inside a shard. uint8 storage needs the percentiles before the first byte.
    """
    return config.plan == "regions" and config.dtype != "uint8"


def prepare(config: ShardConfig) -> Prepared:
    """Discover and open every source, check labels, picks and sizes, compute the intensity
    statistics (unless ``folds_stats``) and make the plan; raises before anything is
    written."""
    datasets: list[Dataset] = []
    classes: Path | ClassTable | None = Path(config.classes) if config.classes else None
    if classes is not None and len(config.sources) > 1:  # one table: each source its rows
        classes = read_class_csv(classes)
    for src in config.sources:
        datasets.append(
            discover(
                src,
                classes=classes,
                tomogram=config.tomogram,
                voxel_spacing=config.voxel_spacing,
                user_id=config.user_id,
                session_id=config.session_id,
                segmentation=config.segmentation,
            )
        )
    if isinstance(classes, ClassTable):
        ids = {spec.id for ds in datasets for spec in ds.sources}
        unknown = sorted(row for row in classes.classes if source_id(row) not in ids)
        if unknown:
            raise BadLabels(
                f"{classes.path}: rows name samples in none of the sources: "
                f"{', '.join(unknown)}; expected one row per sample"
            )
    datasets = _given_radii(datasets, config.radius)
    if config.voxel_spacing is not None and not any(d.layout == "copick" for d in datasets):
        raise BadOption(
            "voxel_spacing",
            config.voxel_spacing,
            "chooses a copick run's VoxelSpacing folder, and no source is a copick project "
            "(the voxel size of other volumes: --voxel-size)",
        )
    class_names = _merge_class_names(datasets)
    sources: dict[str, ShardSource] = {}
    plan_sources: list[PlanSource] = []
    meta: list[dict[str, Any]] = []
    for ds in datasets:
        for spec in ds.sources:
            if spec.id in sources:
                raise ShardError(f"source id {spec.id!r} appears twice ({spec.image}); rename one")
            image = open_volume(spec.image, level=config.level)
            if config.voxel_size is not None:
                image = _given_voxel_size(image, config.voxel_size)
            if 0 in image.shape:
                raise NoVolumeFound(f"{spec.image}: empty volume of shape {image.shape}")
            mask = open_mask(spec.mask, image) if spec.mask else None
            pts = load_points(spec, image, ds)
            points = None
            radii = None
            label = class_names.index(spec.class_name) if spec.class_name else -1
            if pts is not None and len(pts.zyx):
                if spec.class_name and pts.class_names == ("spot",):  # spots of a classed volume
                    ids = np.full(len(pts.labels), label)
                else:
                    ids = np.array([class_names.index(pts.class_names[i]) for i in pts.labels])
                points = np.column_stack([pts.zyx, ids]).astype(np.float32)
                radii = _radii_voxels(ds, pts, image.voxel_size)
            elif pts is not None:
                points = np.zeros((0, 4), np.float32)
            sources[spec.id] = ShardSource(spec.id, image, mask, points)
            plan_sources.append(
                PlanSource(
                    id=spec.id,
                    shape=image.shape,
                    label=label,
                    points=None if points is None else points[:, :3].astype(np.float64),
                    point_labels=None if points is None else points[:, 3].astype(np.int64),
                    point_radii=radii,
                )
            )
            meta.append(
                {
                    "id": spec.id,
                    "path": str(image.path),
                    "format": image.format,
                    "shape": list(image.shape),
                    "dtype": str(image.dtype),
                    "voxel_size": list(image.voxel_size) if image.voxel_size else None,
                    "mask": str(spec.mask) if spec.mask else None,
                    "points": [str(p) for p in spec.picks]
                    + ([str(spec.spots)] if spec.spots else []),
                    "class": spec.class_name,
                }
            )
    voxel_size = _set_voxel_size(meta)
    task = _task(config, sources)
    radii = {n: r for ds in datasets for n, r in ds.radii.items()}
    if task == "detection":
        _warn_untrainable_detection(config, datasets, radii, voxel_size)
    stats = (
        None
        if folds_stats(config)
        else intensity_stats([s.image for s in sources.values()], dtype=config.dtype)
    )
    margin = config.margin_for(voxel_size)
    plan = _plan(config, plan_sources, class_names, sources, margin)
    for m in meta:
        if config.plan != "regions" and any(
            c > n for c, n in zip(config.crop, m["shape"], strict=True)
        ):
            warnings.warn(
                LargeCropWarning(
                    f"{m['path']}: crop {'x'.join(map(str, config.crop))} is larger than the "
                    f"volume {'x'.join(map(str, m['shape']))}; its crops are mostly "
                    f"{config.pad} padding"
                ),
                stacklevel=3,
            )
    items = plan_items(plan)
    if config.classes and all(c.label < 0 for c in items):
        raise BadLabels(f"{config.classes}: the class table labels none of the {len(items)} crops")
    if not items or (isinstance(plan, RegionPlan) and not plan.n_units):
        raise ShardError(
            f"the {config.plan} plan made no crops from {', '.join(config.sources)}"
            + (
                "; regions draw a crop per pick, and none of these sources has one: give "
                "--crops-per-region N (N crops of each volume every epoch, e.g. 16)"
                if config.plan == "regions"
                else ""
            )
        )
    shift = len(plan.class_names) - len(class_names)  # 1 when the planner added "background"
    if shift:
        sources = {k: _shift_point_classes(v, shift) for k, v in sources.items()}
    return Prepared(
        dataset_roots=tuple(str(d.root) for d in datasets),
        sources=sources,
        source_meta=meta,
        plan=plan,
        task=task,
        stats=stats,
        itemsize=_itemsize(config, sources),
        margin=margin,
        voxel_size=voxel_size,
        radii=radii,
        weights={n: w for ds in datasets for n, w in ds.weights.items()},
        mask_names=_merge_mask_names(datasets),
    )


def _given_radii(datasets: list[Dataset], given: Sequence[tuple[str, float]]) -> list[Dataset]:
    """The datasets with ``--radius`` over their own radii (a copick config's): one radius for
    every particle type ("*"), or by name; a name no dataset has is refused."""
    if not given:
        return datasets
    radii = dict(given)
    if "*" not in radii:
        known = {n for ds in datasets for n in ds.class_names}
        unknown = sorted(set(radii) - known)
        if unknown:
            raise BadOption(
                "radius",
                ",".join(f"{n}={r:g}" for n, r in given),
                f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a particle "
                f"type of the sources; they have {', '.join(sorted(known)) or 'none'}",
            )
    every = radii.get("*")
    return [
        dataclasses.replace(
            ds,
            radii={
                **ds.radii,
                **{n: every or radii[n] for n in ds.class_names if every or n in radii},
            },
        )
        for ds in datasets
    ]


def _warn_untrainable_detection(
    config: ShardConfig,
    datasets: Sequence[Dataset],
    radii: dict[str, float],
    voxel_size: Sequence[float] | None,
) -> None:
    """Warn where a detection set cannot train a picker: its targets are drawn from each
    particle type's radius (a copick config's, or ``--radius``) in voxels (one voxel size). The
    set still streams: negatives then keep a voxel's distance from the picks."""
    names = {n for ds in datasets for n in ds.class_names}
    missing = sorted(names - set(radii))
    why = (
        f"--plan {config.plan} with picks makes a detection set"
        if config.task == "auto"
        else "a detection set (--task detection)"
    )
    roots = ", ".join(str(ds.root) for ds in datasets)
    if missing:
        warnings.warn(
            f"{roots}: {why}, whose targets are drawn from each particle's radius, and "
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} none (a copick "
            "config gives them, spot tables do not): `train` will refuse it; give --radius R "
            "in Angstrom for every type, or --radius NAME=R,NAME=R",
            UserWarning,
            stacklevel=3,
        )
    elif voxel_size is None:
        warnings.warn(
            f"{roots}: {why}, whose particle radii (Angstrom) `train` turns into voxels, and "
            "the sources record no common voxel size: `train` will refuse it; give --voxel-size",
            UserWarning,
            stacklevel=3,
        )


def _set_voxel_size(meta: list[dict[str, Any]]) -> tuple[float, ...] | None:
    """The one voxel size of the sources, which the manifest records and augmentation turns
    physical space with; None when none records one or they differ (each case with a warning
    where some sources would be treated otherwise than their files say)."""
    known = {m["path"]: tuple(m["voxel_size"]) for m in meta if m["voxel_size"]}
    sizes = set(known.values())
    if len(sizes) > 1:
        listed = ", ".join(f"{path}: {list(size)}" for path, size in known.items())
        warnings.warn(
            f"the sources record different voxel sizes ({listed} Angstrom): the manifest "
            "records none, so augmentation turns the voxel grid; shard them apart, or give "
            "--voxel-size",
            UserWarning,
            stacklevel=3,
        )
        return None
    if not sizes:
        return None
    size = sizes.pop()
    unknown = [m["path"] for m in meta if not m["voxel_size"]]
    if unknown:
        one = len(unknown) == 1
        warnings.warn(
            f"{', '.join(unknown)} record{'s' if one else ''} no voxel size; the set's "
            f"{list(size)} Angstrom is taken for {'it' if one else 'them'} (augmentation turns "
            "physical space with it); give --voxel-size to say so",
            UserWarning,
            stacklevel=3,
        )
    return size


def _given_voxel_size(image: Volume, size: tuple[float, float, float]) -> Volume:
    """``image`` with the voxel size given by ``--voxel-size``, warning where its file says
    otherwise."""
    if image.voxel_size is not None and not np.allclose(image.voxel_size, size):
        warnings.warn(
            f"{image.path}: --voxel-size {list(size)} replaces the voxel size its file records, "
            f"{list(image.voxel_size)} Angstrom",
            UserWarning,
            stacklevel=4,
        )
    return dataclasses.replace(image, voxel_size=tuple(float(v) for v in size))


def _shift_point_classes(source: ShardSource, shift: int) -> ShardSource:
    """Renumber point classes to the plan's class names (class 0 then being "background")."""
    if source.points is None:
        return source
    points = source.points.copy()
    points[:, 3] += shift
    return dataclasses.replace(source, points=points)


def _merge_class_names(datasets: Sequence[Dataset]) -> tuple[str, ...]:
    names: list[str] = []
    for ds in datasets:
        for name in ds.class_names:
            if name not in names:
                names.append(name)
    if len(datasets) == 1:
        return tuple(names)
    if all(n.isdecimal() for n in names):  # integer spot labels are class ids, as in one folder
        return tuple(str(i) for i in range(max(int(n) for n in names) + 1))
    return tuple(sorted(names))


def _merge_mask_names(datasets: Sequence[Dataset]) -> tuple[str, ...]:
    """The mask label names all the datasets with masks agree on; none where they differ."""
    named = {ds.mask_names for ds in datasets if any(s.mask for s in ds.sources)}
    return named.pop() if len(named) == 1 else ()


def _radii_voxels(ds: Dataset, pts: Any, voxel_size: Sequence[float] | None) -> np.ndarray | None:
    if not ds.radii or not voxel_size:
        return None
    per_name = {name: r / float(np.mean(voxel_size)) for name, r in ds.radii.items()}
    return np.array([per_name.get(pts.class_names[i], 0.0) for i in pts.labels])


def _plan(
    config: ShardConfig,
    sources: list[PlanSource],
    class_names: tuple[str, ...],
    shard_sources: dict[str, ShardSource],
    margin: tuple[int, int, int],
) -> Plan | RegionPlan:
    pad = config.pad != "none"
    if config.plan == "regions":
        itemsize = _itemsize(config, shard_sources)
        reach = [c // 2 + m for c, m in zip(config.crop, margin, strict=True)]
        return plan_regions(
            sources,
            itemsize=itemsize,
            region_max=config.region_max,
            reach=reach,
            per_point=config.per_point,
            negatives=config.negatives,
            crops_per_region=config.crops_per_region,
            class_names=class_names,
        )
    if config.plan == "grid":
        return plan_grid(
            sources, config.crop, stride=config.stride, pad=pad, class_names=class_names
        )
    if config.plan == "sample":
        return plan_samples(sources, config.crop, class_names=class_names)
    if all(s.points is None for s in sources):
        raise BadLabels(
            f"--plan points needs picks or a spot table; none found in {', '.join(config.sources)}"
        )
    return plan_points(
        sources,
        config.crop,
        negatives=config.negatives,
        class_names=class_names,
        pad=pad,
        seed=config.seed,
    )


def _itemsize(config: ShardConfig, sources: dict[str, ShardSource]) -> int:
    """Bytes of a stored voxel (the widest source's, with --dtype keep)."""
    if config.dtype != "keep":
        return np.dtype(config.dtype).itemsize
    return max(np.dtype(s.image.dtype).itemsize for s in sources.values())


def _task(config: ShardConfig, sources: dict[str, ShardSource]) -> str:
    if config.task != "auto":
        return config.task
    if config.plan == "regions":
        if any(s.mask is not None for s in sources.values()):
            return "segmentation"
        if any(s.points is not None for s in sources.values()):
            return "detection"
        return "classification"
    if any(s.mask is not None for s in sources.values()) and config.plan == "grid":
        return "segmentation"
    if config.plan == "grid" and any(s.points is not None for s in sources.values()):
        return "detection"
    return "classification"
