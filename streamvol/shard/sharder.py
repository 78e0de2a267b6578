"""``streamvol shard``: discover sources, plan crops, split, and let dask write one tar per task.

Order of work: everything that can fail on bad input (discovery, shapes, picks, NaN, crop sizes,
labels) runs before the first byte is written; region sets check values region by region as
they write them instead (``sources.folds_stats``). Shards are written atomically under the
folder's state (``folder.STATE``), each with a small record, and move into the folder only when
all are written, the manifest last: a run refused on bad input leaves the folder as it was. A
rerun of the same command keeps the shards whose sha256 matches their record and rewrites the
rest.

``shard`` below is that order, top to bottom; each step is a module of its own: ``config``
(what decides a set), ``sources`` (open, check, plan), ``jobs`` (splits, shards, room),
``folder`` (refuse, resume or start; ``remote`` does the same at a URL), ``run`` (the dask
tasks), ``assemble`` (the manifest).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask

from streamvol.core.lock import folder_lock
from streamvol.shard.assemble import build_manifest
from streamvol.shard.config import ShardConfig, parse_config, parse_size, parse_voxel_size
from streamvol.shard.folder import STATE, claim_folder, publish, shard_inputs
from streamvol.shard.jobs import assign_shards, check_room, split_items
from streamvol.shard.manifest import (
    MANIFEST,
    Summary,
    combine_stats,
    is_url,
    shard_records,
    write_json_atomic,
)
from streamvol.shard.plan import Crop
from streamvol.shard.remote import UrlSet
from streamvol.shard.run import dask_context, run_tasks
from streamvol.shard.sources import Prepared, plan_items, prepare
from streamvol.shard.write import Encoding, ShardRecord, core_summary

# parse_config, parse_size and parse_voxel_size live in ``config``; importable from here too
__all__ = ["ShardConfig", "ShardResult", "parse_config", "parse_size", "parse_voxel_size", "shard"]


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
    of a ``dask.distributed`` scheduler (its workers must see the sources, and ``out`` when it
    is a folder). ``progress(done, total)`` is called as shards finish. ``out`` may be an
    fsspec URL (``s3://bucket/set``, with ``storage_options``): each task writes its tar to a
    temporary file where it runs and puts it at the URL whole, and the manifest goes last; a
    rerun resumes there as in a folder (``remote``). The run refuses to start when its output
    (estimated from the plan) exceeds ``max_bytes`` or a folder's free space, and holds the
    folder's writer lock (``streamvol.core.lock``) while it writes.
    """
    started = time.perf_counter()
    remote = None
    if is_url(out):  # refused before anything is read when it holds another command's set
        remote = UrlSet.open(str(out), storage_options or {}, config, overwrite)
    with dask_context(workers, processes, scheduler) as client:
        prepared = prepare(config)
        # the classes a model learns from these crops (a segmentation set's come from masks)
        names = prepared.plan.class_names if prepared.task != "segmentation" else None
        splits, split_warnings = split_items(plan_items(prepared.plan), config, names)
        jobs = assign_shards(splits, config.shard_size, config.region_max // prepared.itemsize)

        def manifest_of(records: dict[str, ShardRecord]) -> dict[str, Any]:
            stats = prepared.stats or _region_stats(config, prepared, records)
            finished = dataclasses.replace(prepared, stats=stats)
            return build_manifest(config, finished, splits, jobs, records, command, split_warnings)

        if remote is not None:
            check_room(config, prepared, jobs, remote.url, max_bytes)
            records, skipped = _write_all(
                config, prepared, jobs, remote, overwrite, client, progress
            )
            manifest = manifest_of(records)
            remote.publish(manifest)
        else:
            out = Path(out)
            with folder_lock(out):
                check_room(config, prepared, jobs, out, max_bytes)
                records, skipped = _write_all(
                    config, prepared, jobs, out, overwrite, client, progress
                )
                manifest = manifest_of(records)
                write_json_atomic(out / MANIFEST, manifest)
                shutil.rmtree(out / STATE, ignore_errors=True)
    return ShardResult(
        out=out,
        manifest=manifest,
        written=[name for name, _ in jobs if name not in skipped],
        skipped=sorted(skipped),
        seconds=time.perf_counter() - started,
    )


def _encoding(config: ShardConfig, prepared: Prepared) -> Encoding:
    """How the tasks store crops: size, margin, padding, dtype and the uint8 range."""
    return Encoding(
        crop=config.crop,
        margin=prepared.margin,
        pad="reflect" if config.pad == "none" else config.pad,
        dtype=config.dtype,
        low=prepared.stats["p0_5"] if prepared.stats else 0.0,
        high=prepared.stats["p99_5"] if prepared.stats else 1.0,
        summarise=prepared.stats is None,
    )


def _write_all(
    config: ShardConfig,
    prepared: Prepared,
    jobs: list[tuple[str, list[Crop]]],
    out: Path | UrlSet,
    overwrite: bool,
    client: Any,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, ShardRecord], set[str]]:
    """Write what is not finished yet into a folder or at a URL; return every shard's record,
    and the names skipped."""
    encoding = _encoding(config, prepared)
    inputs = shard_inputs(prepared, jobs, config.dtype)
    if isinstance(out, UrlSet):
        finished, target = out.claim(config, inputs), out.target
    else:
        finished, target = claim_folder(out, config, overwrite, inputs), out
    records = dict(finished)
    todo = [(name, crops) for name, crops in jobs if name not in finished]
    if progress:
        progress(len(finished), len(jobs))

    def done(record: ShardRecord) -> None:
        records[record.name] = record
        if progress:
            progress(len(records), len(jobs))

    run_tasks(todo, target, prepared.sources, encoding, client, done, inputs)
    if not isinstance(out, UrlSet):  # a URL's tars are in place as they are put
        publish(out, records)
    return records, set(finished)


def _region_stats(
    config: ShardConfig, prepared: Prepared, records: dict[str, ShardRecord]
) -> dict[str, float]:
    """The set's intensity statistics from each region's core, as its shard task summarised it
    or, for shards a resumed run kept, read afresh (the same numbers either way)."""
    summaries: dict[str, Summary] = {}
    for record in records.values():
        if record.intensity:  # empty for a shard a resumed run kept
            summaries.update(zip(record.keys, record.intensity, strict=True))
    tiles = plan_items(prepared.plan)
    missing = [t for t in tiles if t.key not in summaries]
    if missing:
        # traverse=False: the task reads its region; dask must not compute the whole volume
        source = {k: dask.delayed(v, traverse=False) for k, v in prepared.sources.items()}
        found = dask.compute(
            *[dask.delayed(core_summary)(source[t.source], t, config.dtype) for t in missing]
        )
        summaries.update(zip((t.key for t in missing), found, strict=True))
    per_source = [[summaries[t.key] for t in tiles if t.source == sid] for sid in prepared.sources]
    images = [s.image for s in prepared.sources.values()]
    return combine_stats(images, per_source, dtype=config.dtype)
