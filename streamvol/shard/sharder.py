"""``streamvol shard``: discover sources, plan crops, split, and let dask write one tar per task.

Order of work: everything that can fail on bad input (discovery, shapes, picks, NaN, crop sizes,
labels) runs before the first byte is written. Shards are written atomically, each finished
shard leaves a small record, and the manifest is written last; a rerun of the same command skips
shards whose sha256 matches their record and rewrites the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import shutil
import tarfile
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from streamvol import __version__
from streamvol.errors import (
    BadLabels,
    LargeCropWarning,
    NotEnoughSpace,
    NoVolumeFound,
    ShardError,
)
from streamvol.io import Dataset, Volume, discover, load_points, open_mask, open_volume
from streamvol.shard.lock import LOCK, folder_lock
from streamvol.shard.manifest import (
    CHECKSUM,
    FORMAT,
    MANIFEST,
    VERSION,
    intensity_stats,
    is_url,
    join,
    read_manifest,
    shard_records,
    write_json_atomic,
)
from streamvol.shard.plan import (
    Crop,
    Plan,
    PlanSource,
    as_zyx,
    plan_grid,
    plan_points,
    plan_samples,
)
from streamvol.shard.regions import RegionPlan, Tile, plan_regions
from streamvol.shard.split import SplitWarning, fold_crops, parse_fractions, split_crops
from streamvol.shard.write import Encoding, ShardRecord, ShardSource, file_sha256, write_shard

PLANS = ("grid", "points", "sample", "regions")
PADS = ("reflect", "zero", "none")
DTYPES = ("keep", "float16", "uint8")
TASKS = ("auto", "classification", "segmentation", "detection")
STATE = ".streamvol"  # records of finished shards while a run is in progress


@dataclass(frozen=True)
class ShardConfig:
    """Everything that decides the bytes of a shard set (and so its identity on rerun)."""

    sources: tuple[str, ...]
    plan: str = "grid"
    crop: tuple[int, int, int] = (64, 64, 64)
    context: str | int = "auto"
    augment: str = "default"
    max_shift: int = 0
    stride: tuple[int, int, int] | None = None
    negatives: float = 0.0
    pad: str = "reflect"
    dtype: str = "keep"
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    folds: int | None = None
    seed: int = 0
    shard_size: int = 256
    classes: str | None = None
    level: int = 0
    task: str = "auto"
    region_max: int = 1 << 30
    per_point: bool = True
    crops_per_region: int = 0
    voxel_size: tuple[float, float, float] | None = None  # Angstrom; replaces the files' own

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("plan", self.plan, PLANS),
            ("pad", self.pad, PADS),
            ("dtype", self.dtype, DTYPES),
            ("task", self.task, TASKS),
        ):
            if value not in allowed:
                raise ValueError(f"--{name} {value!r}: expected one of {', '.join(allowed)}")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size {self.shard_size}: expected a positive count")
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"--folds {self.folds}: expected at least 2 folds")
        if self.negatives < 0:
            raise ValueError(
                f"--negatives {self.negatives}: expected a ratio >= 0 (background crops per point)"
            )
        if self.region_max < 1:
            raise ValueError(f"--region-max {self.region_max}: expected bytes >= 1")
        if self.crops_per_region < 0:
            raise ValueError(f"--crops-per-region {self.crops_per_region}: expected a count >= 0")
        if not (self.context == "auto" or (isinstance(self.context, int) and self.context >= 0)):
            raise ValueError(f"--context {self.context!r}: expected 'auto' or a number >= 0")
        if self.voxel_size is not None and (
            len(self.voxel_size) != 3 or not all(v > 0 for v in self.voxel_size)
        ):
            raise ValueError(
                f"--voxel-size {self.voxel_size}: expected 3 positive sizes (z, y, x, Angstrom)"
            )

    @property
    def margin(self) -> tuple[int, int, int]:
        """``auto``: what the augmentation the shards are meant for needs (free rotation for the
        ``default`` preset: ceil(c (sqrt(3) - 1) / 2) a side), plus ``max_shift``; else N."""
        if self.context != "auto":
            return (int(self.context),) * 3
        from streamvol.augment import load_spec

        spec = load_spec(self.augment)
        need = spec.margin(self.crop) if spec is not None else (0, 0, 0)
        return tuple(m + self.max_shift for m in need)  # type: ignore[return-value]

    def digest(self) -> str:
        fields = asdict(self)
        if fields["voxel_size"] is None:  # as sets made before the option existed
            del fields["voxel_size"]
        payload = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class ShardResult:
    """What a run did, for the final table."""

    out: Path | str  # a local folder or a URL
    manifest: dict[str, Any]
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_written(self) -> int:
        records = shard_records(self.manifest)
        return sum(records[n]["bytes"] for n in self.written)


@dataclass(frozen=True)
class _Prepared:
    dataset_roots: tuple[str, ...]
    sources: dict[str, ShardSource]
    source_meta: list[dict[str, Any]]
    plan: Plan | RegionPlan
    task: str
    stats: dict[str, float]
    itemsize: int  # bytes of a stored voxel
    radii: dict[str, float] = field(default_factory=dict)  # particle radii, Angstrom (copick)


def _items(plan: Plan | RegionPlan) -> tuple[Crop, ...] | tuple[Tile, ...]:
    """What a plan writes: crops, or regions."""
    return plan.tiles if isinstance(plan, RegionPlan) else plan.crops


def shard(
    config: ShardConfig,
    out: str | Path,
    *,
    workers: int | None = None,
    processes: bool = False,
    scheduler: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_bytes: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ShardResult:
    """Write the shard set that ``config`` describes into ``out``; see the module docstring.

    ``workers``/``processes`` run local dask threads or processes; ``scheduler`` is the address
    of a ``dask.distributed`` scheduler (its workers must see ``out`` and the sources).
    ``progress(done, total)`` is called as shards finish. ``out`` may be an fsspec URL
    (``s3://bucket/set``, with ``storage_options``): the set is written to a local temporary
    folder, then each tar is uploaded whole and the manifest last. The run refuses to start
    when its output (estimated from the plan) exceeds the free space or ``max_bytes``, and
    holds the folder's writer lock (``streamvol.shard.lock``) while it writes.
    """
    options = dict(
        workers=workers,
        processes=processes,
        scheduler=scheduler,
        command=command,
        progress=progress,
        max_bytes=max_bytes,
    )
    if is_url(out):
        return _shard_to_url(config, str(out), storage_options or {}, overwrite, options)
    started = time.perf_counter()
    out = Path(out)
    with _dask_context(workers, processes, scheduler) as client:
        prepared = _prepare(config)
        splits, split_warnings = _split(_items(prepared.plan), config)
        jobs = _assign(splits, config.shard_size, config.region_max // prepared.itemsize)
        with folder_lock(out):
            _check_room(config, prepared, jobs, out, max_bytes)
            records, skipped = _write_all(config, prepared, jobs, out, overwrite, client, progress)
            manifest = _manifest(config, prepared, splits, jobs, records, command, split_warnings)
            write_json_atomic(out / MANIFEST, manifest)
            shutil.rmtree(out / STATE, ignore_errors=True)
    return ShardResult(
        out=out,
        manifest=manifest,
        written=[name for name, _ in jobs if name not in skipped],
        skipped=sorted(skipped),
        seconds=time.perf_counter() - started,
    )


def _shard_to_url(
    config: ShardConfig, url: str, storage: dict[str, Any], overwrite: bool, options: dict
) -> ShardResult:
    """Write the set locally, then upload each tar whole and the manifest last: a reader sees
    the whole set or none of it (never a manifest over missing or old tars)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **storage)
    present = fs.find(root) if fs.isdir(root) else []
    if present and not overwrite:
        raise ShardError(
            f"{url}: not empty ({len(present)} objects); use --overwrite to replace them, "
            "or another --out"
        )
    stage = Path(tempfile.mkdtemp(prefix="streamvol-shard-"))
    try:
        result = shard(config, stage / "set", **options)
        manifest = join(root, MANIFEST)
        if present:  # the manifest goes first, so no reader pairs it with the new tars
            if fs.exists(manifest):
                fs.rm_file(manifest)
            fs.rm([p for p in present if p != manifest])
        with contextlib.suppress(FileExistsError):  # s3fs: a bucket that exists
            fs.makedirs(root, exist_ok=True)
        for name in sorted(shard_records(result.manifest)):
            fs.put_file(str(result.out / name), join(root, name))
        fs.put_file(str(result.out / MANIFEST), manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dataclasses.replace(result, out=url)


def _check_room(
    config: ShardConfig,
    prepared: _Prepared,
    jobs: list[tuple[str, list[Any]]],
    out: Path,
    max_bytes: int | None,
) -> None:
    """Refuse a run whose output will not fit, before its first byte: at least the stored
    blocks' bytes (crops x block voxels x stored item size, masks at a byte a voxel, plus tar
    headers) against ``max_bytes`` and against the target's free space (tars already there
    count as free: they are kept or replaced)."""
    voxels = math.prod(c + 2 * m for c, m in zip(config.crop, config.margin, strict=True))
    fixed = {"float16": 2, "uint8": 1}.get(config.dtype)
    need = 0
    for _, crops in jobs:
        for crop in crops:
            source = prepared.sources[crop.source]
            item = fixed or source.image.dtype.itemsize
            n = math.prod(crop.shape) if isinstance(crop, Tile) else voxels  # a region: its own
            need += n * (item + (source.mask is not None)) + 3 * 2 * tarfile.BLOCKSIZE
    if max_bytes is not None and need > max_bytes:
        raise NotEnoughSpace(
            f"{out}: the plan's {sum(len(c) for _, c in jobs)} crops of {voxels} voxels need at "
            f"least {_size(need)}, more than --max-bytes {_size(max_bytes)}; "
            "use a smaller --crop, --context or --stride, or raise --max-bytes"
        )
    free = shutil.disk_usage(out).free + sum(p.stat().st_size for p in out.glob("*.tar"))
    if need > free:
        raise NotEnoughSpace(
            f"{out}: the plan's {sum(len(c) for _, c in jobs)} crops of {voxels} voxels need at "
            f"least {_size(need)}, but the disk has {_size(free)} free; "
            "use a smaller --crop, --context or --stride, or another --out"
        )


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError  # unreachable


def parse_size(text: str | int) -> int:
    """``"500M"``, ``"2G"``, ``"1.5TB"``, ``"8GiB"`` or a plain count -> bytes (k, M, G, T by
    1000; Ki, Mi, Gi, Ti by 1024)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKMGT]i?)?[bB]?\s*", text)
    if not match:
        raise ValueError(f"--max-bytes {text!r}: expected a size like 500M, 2G or 8GiB")
    number, unit = float(match[1]), match[2] or ""
    power = "kMGT".index(unit[0].replace("K", "k")) + 1 if unit else 0
    return int(number * (1024 if unit.endswith("i") else 1000) ** power)


@contextlib.contextmanager
def _dask_context(workers: int | None, processes: bool, scheduler: str | None) -> Iterator[Any]:
    """Where every dask computation of a run goes: a distributed client, or local workers."""
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set(scheduler="processes" if processes else "threads", num_workers=workers):
        yield None


def _write_all(
    config: ShardConfig,
    prepared: _Prepared,
    jobs: list[tuple[str, list[Crop]]],
    out: Path,
    overwrite: bool,
    client: Any,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, ShardRecord], set[str]]:
    """Write what is not finished yet; return every shard's record, and the names skipped."""
    encoding = Encoding(
        crop=config.crop,
        margin=config.margin,
        pad="reflect" if config.pad == "none" else config.pad,
        dtype=config.dtype,
        low=prepared.stats["p0_5"],
        high=prepared.stats["p99_5"],
    )
    finished = _claim_folder(out, config, overwrite, {name for name, _ in jobs})
    records = dict(finished)
    todo = [(name, crops) for name, crops in jobs if name not in finished]
    if progress:
        progress(len(finished), len(jobs))

    def done(record: ShardRecord) -> None:
        records[record.name] = record
        if progress:
            progress(len(records), len(jobs))

    _run(todo, out, prepared.sources, encoding, client, done)
    return records, set(finished)


# --- before writing: sources, checks, plan --------------------------------------------------


def _prepare(config: ShardConfig) -> _Prepared:
    datasets: list[Dataset] = []
    for src in config.sources:
        classes = Path(config.classes) if config.classes else None
        datasets.append(discover(src, classes=classes))
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
            if pts is not None and len(pts.zyx):
                ids = np.array([class_names.index(pts.class_names[i]) for i in pts.labels])
                points = np.column_stack([pts.zyx, ids]).astype(np.float32)
                radii = _radii_voxels(ds, pts, image.voxel_size)
            elif pts is not None:
                points = np.zeros((0, 4), np.float32)
            label = class_names.index(spec.class_name) if spec.class_name else -1
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
    stats = intensity_stats([s.image for s in sources.values()], dtype=config.dtype)
    plan = _plan(config, plan_sources, class_names, sources)
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
    items = _items(plan)
    if config.classes and all(c.label < 0 for c in items):
        raise BadLabels(f"{config.classes}: the class table labels none of the {len(items)} crops")
    if not items or (isinstance(plan, RegionPlan) and not plan.n_units):
        raise ShardError(
            f"the {config.plan} plan made no crops from {', '.join(config.sources)}"
            + (
                "; regions draw crops per pick or with --crops-per-region N"
                if config.plan == "regions"
                else ""
            )
        )
    shift = len(plan.class_names) - len(class_names)  # 1 when the planner added "background"
    if shift:
        sources = {k: _shift_point_classes(v, shift) for k, v in sources.items()}
    return _Prepared(
        dataset_roots=tuple(str(d.root) for d in datasets),
        sources=sources,
        source_meta=meta,
        plan=plan,
        task=_task(config, sources),
        stats=stats,
        itemsize=_itemsize(config, sources),
        radii={n: r for ds in datasets for n, r in ds.radii.items()},
    )


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
    return tuple(sorted(names)) if len(datasets) > 1 else tuple(names)


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
) -> Plan | RegionPlan:
    pad = config.pad != "none"
    if config.plan == "regions":
        itemsize = _itemsize(config, shard_sources)
        reach = [c // 2 + m for c, m in zip(config.crop, config.margin, strict=True)]
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


def _split(
    items: Sequence[Crop] | Sequence[Tile], config: ShardConfig
) -> tuple[dict[str, list[Any]], list[str]]:
    """The splits (or folds), and the warnings of a grouping that had to fall back. Regions
    are dealt as stand-in crops (source, start, class)."""
    tiles = {t.key: t for t in items if isinstance(t, Tile)}
    crops = [t.as_crop() for t in items] if tiles else list(items)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SplitWarning)
        if config.folds:
            splits = fold_crops(crops, config.folds, seed=config.seed)
        else:
            splits = split_crops(crops, config.split, seed=config.seed)
    if tiles:
        splits = {name: [tiles[c.key] for c in part] for name, part in splits.items()}
    return splits, [str(w.message) for w in caught if issubclass(w.category, SplitWarning)]


def _assign(
    splits: dict[str, list[Any]], shard_size: int, region_voxels: int
) -> list[tuple[str, list[Any]]]:
    """Shards of ``shard_size`` crops; regions: as many as fit ``region_voxels`` voxels (at
    least one), so big volumes are written in parallel, one task each."""
    jobs = []
    for split, items in splits.items():
        groups: list[list[Any]] = []
        if items and isinstance(items[0], Tile):
            size = 0
            for tile in items:
                voxels = math.prod(tile.shape)
                if not groups or len(groups[-1]) >= shard_size or size + voxels > region_voxels:
                    groups.append([])
                    size = 0
                groups[-1].append(tile)
                size += voxels
        else:
            groups = [items[s : s + shard_size] for s in range(0, len(items), shard_size)]
        for i, group in enumerate(groups):
            jobs.append((f"{split}-{i:06d}.tar", group))
    return jobs


# --- the output folder: refuse, resume, or start ---------------------------------------------


def _claim_folder(
    out: Path, config: ShardConfig, overwrite: bool, planned: set[str]
) -> dict[str, ShardRecord]:
    """Make ``out`` ours; return the records of shards already finished and intact."""
    digest = config.digest()
    previous = _previous_digest(out)
    if any(p.name != LOCK for p in out.iterdir()) and previous != digest:
        if not overwrite:
            what = "a different command" if previous else "files streamvol did not write"
            raise ShardError(
                f"{out}: not empty and holds {what}; "
                "use --overwrite to replace it, or another --out"
            )
        _clear(out)
    state = out / STATE
    state.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state / "config.json", {"digest": digest, "config": asdict(config)})
    records = _known_records(out)
    finished = {}
    for name, rec in records.items():
        path = out / name
        intact = path.is_file() and path.stat().st_size == rec["bytes"] and "checksums" in rec
        if name in planned and intact and file_sha256(path) == rec["sha256"]:
            finished[name] = ShardRecord.from_json(rec)
    for stale in out.glob("*.tar.partial"):
        stale.unlink()
    return finished


def _previous_digest(out: Path) -> str | None:
    for path in (out / STATE / "config.json", out / MANIFEST):
        if path.is_file():
            try:
                payload = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            return payload.get("digest") or payload.get("config_sha256")
    return None


def _known_records(out: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if (out / MANIFEST).is_file():
        with contextlib.suppress(ShardError):  # a corrupt manifest: rely on the shard records
            records.update(shard_records(read_manifest(out)))
    for path in (out / STATE).glob("*.json"):
        if path.name != "config.json":
            records[path.stem] = json.loads(path.read_text())
    return records


def _clear(out: Path) -> None:
    for path in out.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


# --- writing ---------------------------------------------------------------------------------


def _task_write(
    out: Path, name: str, crops: list[Crop], sources: dict[str, ShardSource], encoding: Encoding
) -> ShardRecord:
    """One dask task: write a shard, then leave its record so a crashed run can resume."""
    record = write_shard(out / name, crops, sources, encoding)
    write_json_atomic(out / STATE / f"{name}.json", record.to_json())
    return record


def _run(
    todo: list[tuple[str, list[Crop]]],
    out: Path,
    sources: dict[str, ShardSource],
    encoding: Encoding,
    client: Any,
    done: Callable[[ShardRecord], None],
) -> None:
    """Run one dask task per shard; ``done(record)`` is called as each shard finishes."""
    used = {c.source for _, crops in todo for c in crops}
    sources = {k: v for k, v in sources.items() if k in used}
    if client is not None:
        from distributed import as_completed

        shared = client.scatter(sources, broadcast=True)
        futures = [
            client.submit(_task_write, out, name, crops, shared, encoding, key=f"shard-{name}")
            for name, crops in todo
        ]
        for future in as_completed(futures):
            done(future.result())
        return
    from dask.callbacks import Callback

    class _Done(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, ShardRecord):
                done(result)

    # traverse=False: the sources hold lazy dask arrays that each task slices itself; dask must
    # not compute them (whole volumes) as task inputs.
    shared = dask.delayed(sources, traverse=False)
    tasks = [dask.delayed(_task_write)(out, name, crops, shared, encoding) for name, crops in todo]
    with _Done():
        dask.compute(*tasks)


# --- the manifest ----------------------------------------------------------------------------


def _manifest(
    config: ShardConfig,
    prepared: _Prepared,
    splits: dict[str, list[Crop]],
    jobs: list[tuple[str, list[Crop]]],
    records: dict[str, ShardRecord],
    command: str | None,
    split_warnings: list[str],
) -> dict[str, Any]:
    names = prepared.plan.class_names
    voxel_sizes = {tuple(m["voxel_size"]) for m in prepared.source_meta if m["voxel_size"]}
    voxel_size = voxel_sizes.pop() if len(voxel_sizes) == 1 else None
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    for name, _ in jobs:
        by_split[name.rsplit("-", 1)[0]].append(records[name].to_json())
    counts = {
        split: {
            names[k] if 0 <= k < len(names) else "unlabelled": v
            for k, v in sorted(Counter(_labels(items)).items())
        }
        for split, items in splits.items()
    }
    stored = tuple(c + 2 * m for c, m in zip(config.crop, config.margin, strict=True))
    out_dtype = (
        str(next(iter(prepared.sources.values())).image.dtype)
        if config.dtype == "keep"
        else config.dtype
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "checksum": CHECKSUM,
        "streamvol_version": __version__,
        "task": prepared.task,
        "crop": list(config.crop),
        "margin": list(config.margin),
        "stored_shape": list(stored),
        "max_shift": config.max_shift,
        "pad": config.pad,
        "dtype": out_dtype,
        "voxel_size": list(voxel_size) if voxel_size else None,
        "class_names": list(names),
        **_radii(prepared.radii, voxel_size),
        "members": _members(prepared),
        "plan": {
            "kind": config.plan,
            "stride": list(config.stride) if config.stride else None,
            "negatives": config.negatives,
            "warnings": list(getattr(prepared.plan, "warnings", ())),
            **(_region_settings(config, prepared.plan) if config.plan == "regions" else {}),
        },
        "seed": config.seed,
        "split": {
            **({"folds": config.folds} if config.folds else {"fractions": list(config.split)}),
            "warnings": split_warnings,
        },
        "splits": by_split,
        "counts": {
            split: sum(sum(r.get("units") or [r["count"]]) for r in shards)
            for split, shards in by_split.items()
        },
        "class_counts": counts,
        "stats": prepared.stats,
        "sources": prepared.source_meta,
        "command": command or f"streamvol.shard.shard({config!r})",
        "config": asdict(config),
        "config_sha256": config.digest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _labels(items: Sequence[Crop] | Sequence[Tile]) -> list[int]:
    """The class of every sample an epoch yields: each crop's, or each region's units'."""
    return [k for t in items for k in (t.unit_labels() if isinstance(t, Tile) else [t.label])]


def _region_settings(config: ShardConfig, plan: Any) -> dict[str, Any]:
    """What the loader needs to draw a region set's crops (``streamvol.stream.draw``)."""
    return {
        "per_point": config.per_point,
        "crops_per_region": config.crops_per_region,
        "max_shift": config.max_shift,
        "region_max": config.region_max,
        "regions": len(plan.tiles),
        # tiles have interior sides, where a crop may not reach past the stored margin
        "tiled": any(t.start != (0, 0, 0) or t.stop != t.volume_shape for t in plan.tiles),
    }


def _radii(radii: dict[str, float], voxel_size: Sequence[float] | None) -> dict[str, Any]:
    """Particle radii for detection targets: Angstrom (copick config) and voxels of the stored
    array (the mean voxel size; None when the sources' voxel sizes differ or are unknown)."""
    if not radii:
        return {}
    mean = float(np.mean(voxel_size)) if voxel_size else None
    return {
        "radii_angstrom": dict(radii),
        "radii_voxels": {n: r / mean for n, r in radii.items()} if mean else None,
    }


def _members(prepared: _Prepared) -> list[str]:
    members = ["image.npy", "json"]
    if any(s.mask is not None for s in prepared.sources.values()):
        members.append("mask.npy")
    if any(s.points is not None for s in prepared.sources.values()):
        members.append("points.npy")
    if any(c.label >= 0 for c in _items(prepared.plan)):
        members.append("cls")
    return members


def parse_voxel_size(value: str | float | Sequence[float]) -> tuple[float, float, float]:
    """``"10"``, ``10`` or ``"20,10,10"`` (z, y, x) -> a voxel size in Angstrom per axis."""
    try:
        parts = (
            [float(v) for v in value.split(",")]
            if isinstance(value, str)
            else [float(v) for v in np.atleast_1d(value)]
        )
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not all(v > 0 and math.isfinite(v) for v in parts):
        raise ValueError(
            f"--voxel-size {value!r}: expected one positive size or z,y,x in Angstrom, e.g. 10 "
            "or 20,10,10"
        )
    return (parts[0], parts[1], parts[2])


def parse_config(
    sources: Sequence[str | Path],
    *,
    crop: str | int | Sequence[int] = 64,
    context: str | int = "auto",
    stride: str | int | Sequence[int] | None = None,
    split: str | Sequence[float] = "0.8,0.1,0.1",
    **options: Any,
) -> ShardConfig:
    """Build a ``ShardConfig`` from CLI-style values (strings like ``"32,64,64"`` allowed)."""
    if isinstance(context, str) and context != "auto":
        try:
            context = int(context)
        except ValueError:
            raise ValueError(f"--context {context!r}: expected 'auto' or a number") from None
    fractions = parse_fractions(split) if isinstance(split, str) else tuple(split)
    classes = options.pop("classes", None)
    if options.get("voxel_size") is not None:
        options["voxel_size"] = parse_voxel_size(options["voxel_size"])
    return ShardConfig(
        sources=tuple(str(Path(s).resolve()) for s in sources),
        crop=as_zyx(crop),
        context=context,
        stride=as_zyx(stride) if stride is not None else None,
        split=fractions,
        classes=str(Path(classes).resolve()) if classes else None,
        **options,
    )
