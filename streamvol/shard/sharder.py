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
import shutil
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
from streamvol.errors import BadLabels, NoVolumeFound, ShardError
from streamvol.io import Dataset, discover, load_points, open_mask, open_volume
from streamvol.shard.manifest import (
    FORMAT,
    MANIFEST,
    VERSION,
    intensity_stats,
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
from streamvol.shard.split import SplitWarning, fold_crops, parse_fractions, split_crops
from streamvol.shard.write import Encoding, ShardRecord, ShardSource, file_sha256, write_shard

PLANS = ("grid", "points", "sample")
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
        if not (self.context == "auto" or (isinstance(self.context, int) and self.context >= 0)):
            raise ValueError(f"--context {self.context!r}: expected 'auto' or a number >= 0")

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
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class ShardResult:
    """What a run did, for the final table."""

    out: Path
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
    plan: Plan
    task: str
    stats: dict[str, float]
    radii: dict[str, float] = field(default_factory=dict)  # particle radii, Angstrom (copick)


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
) -> ShardResult:
    """Write the shard set that ``config`` describes into ``out``; see the module docstring.

    ``workers``/``processes`` run local dask threads or processes; ``scheduler`` is the address
    of a ``dask.distributed`` scheduler (its workers must see ``out`` and the sources).
    ``progress(done, total)`` is called as shards finish.
    """
    started = time.perf_counter()
    out = Path(out)
    with _dask_context(workers, processes, scheduler) as client:
        prepared = _prepare(config)
        splits, split_warnings = _split(prepared.plan.crops, config)
        jobs = _assign(splits, config.shard_size)
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
    stats = intensity_stats([s.image for s in sources.values()])
    plan = _plan(config, plan_sources, class_names)
    if config.classes and all(c.label < 0 for c in plan.crops):
        raise BadLabels(
            f"{config.classes}: the class table labels none of the {len(plan.crops)} crops"
        )
    if not plan.crops:
        raise ShardError(f"the {config.plan} plan made no crops from {', '.join(config.sources)}")
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
        radii={n: r for ds in datasets for n, r in ds.radii.items()},
    )


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


def _plan(config: ShardConfig, sources: list[PlanSource], class_names: tuple[str, ...]) -> Plan:
    pad = config.pad != "none"
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


def _task(config: ShardConfig, sources: dict[str, ShardSource]) -> str:
    if config.task != "auto":
        return config.task
    if any(s.mask is not None for s in sources.values()) and config.plan == "grid":
        return "segmentation"
    if config.plan == "grid" and any(s.points is not None for s in sources.values()):
        return "detection"
    return "classification"


def _split(crops: Sequence[Crop], config: ShardConfig) -> tuple[dict[str, list[Crop]], list[str]]:
    """The splits (or folds), and the warnings of a grouping that had to fall back."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SplitWarning)
        if config.folds:
            splits = fold_crops(crops, config.folds, seed=config.seed)
        else:
            splits = split_crops(crops, config.split, seed=config.seed)
    return splits, [str(w.message) for w in caught if issubclass(w.category, SplitWarning)]


def _assign(splits: dict[str, list[Crop]], shard_size: int) -> list[tuple[str, list[Crop]]]:
    jobs = []
    for split, crops in splits.items():
        for i, start in enumerate(range(0, len(crops), shard_size)):
            jobs.append((f"{split}-{i:06d}.tar", crops[start : start + shard_size]))
    return jobs


# --- the output folder: refuse, resume, or start ---------------------------------------------


def _claim_folder(
    out: Path, config: ShardConfig, overwrite: bool, planned: set[str]
) -> dict[str, ShardRecord]:
    """Make ``out`` ours; return the records of shards already finished and intact."""
    digest = config.digest()
    previous = _previous_digest(out)
    if out.exists() and any(out.iterdir()) and previous != digest:
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
        intact = path.is_file() and path.stat().st_size == rec["bytes"]
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
            for k, v in sorted(Counter(c.label for c in crops).items())
        }
        for split, crops in splits.items()
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
        },
        "seed": config.seed,
        "split": {
            **({"folds": config.folds} if config.folds else {"fractions": list(config.split)}),
            "warnings": split_warnings,
        },
        "splits": by_split,
        "counts": {split: sum(r["count"] for r in shards) for split, shards in by_split.items()},
        "class_counts": counts,
        "stats": prepared.stats,
        "sources": prepared.source_meta,
        "command": command or f"streamvol.shard.shard({config!r})",
        "config": asdict(config),
        "config_sha256": config.digest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
    if any(c.label >= 0 for c in prepared.plan.crops):
        members.append("cls")
    return members


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
    return ShardConfig(
        sources=tuple(str(Path(s).resolve()) for s in sources),
        crop=as_zyx(crop),
        context=context,
        stride=as_zyx(stride) if stride is not None else None,
        split=fractions,
        classes=str(Path(classes).resolve()) if classes else None,
        **options,
    )
