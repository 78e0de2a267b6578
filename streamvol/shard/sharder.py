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
``folder`` (refuse, resume or start), ``run`` (the dask tasks), ``assemble`` (the manifest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask

from streamvol.errors import NotEnoughSpace, ShardError
from streamvol.shard.assemble import build_manifest
from streamvol.shard.config import ShardConfig, parse_config, parse_size, parse_voxel_size
from streamvol.shard.folder import STATE, claim_folder, publish, shard_inputs
from streamvol.shard.jobs import assign_shards, check_room, split_items
from streamvol.shard.lock import folder_lock
from streamvol.shard.manifest import (
    MANIFEST,
    Summary,
    combine_stats,
    is_url,
    join,
    shard_records,
    write_json_atomic,
)
from streamvol.shard.plan import Crop
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
    upload_progress: Callable[[int, int], None] | None = None,
) -> ShardResult:
    """Write the shard set that ``config`` describes into ``out``; see the module docstring.

    ``workers``/``processes`` run local dask threads or processes; ``scheduler`` is the address
    of a ``dask.distributed`` scheduler (its workers must see ``out`` and the sources).
    ``progress(done, total)`` is called as shards finish. ``out`` may be an fsspec URL
    (``s3://bucket/set``, with ``storage_options``): the set is written to a local temporary
    folder, then each tar is uploaded whole (``upload_progress(bytes sent, bytes in all)``,
    several at a time) and the manifest last. The run refuses to start
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
        storage = storage_options or {}
        return _shard_to_url(config, str(out), storage, overwrite, options, upload_progress)
    started = time.perf_counter()
    out = Path(out)
    with dask_context(workers, processes, scheduler) as client:
        prepared = prepare(config)
        names = prepared.plan.class_names
        splits, split_warnings = split_items(plan_items(prepared.plan), config, names)
        jobs = assign_shards(splits, config.shard_size, config.region_max // prepared.itemsize)
        with folder_lock(out):
            check_room(config, prepared, jobs, out, max_bytes)
            records, skipped = _write_all(config, prepared, jobs, out, overwrite, client, progress)
            if prepared.stats is None:
                prepared = dataclasses.replace(
                    prepared, stats=_region_stats(config, prepared, records)
                )
            manifest = build_manifest(
                config, prepared, splits, jobs, records, command, split_warnings
            )
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
    config: ShardConfig,
    url: str,
    storage: dict[str, Any],
    overwrite: bool,
    options: dict,
    progress: Callable[[int, int], None] | None,
) -> ShardResult:
    """Write the set locally, then upload each tar whole and the manifest last: a reader sees
    the whole set or none of it (never a manifest over missing or old tars)."""
    import fsspec

    started = time.perf_counter()
    fs, root = fsspec.core.url_to_fs(url, **storage)
    present = fs.find(root) if fs.isdir(root) else []
    if present and not overwrite:
        raise ShardError(
            f"{url}: not empty ({len(present)} objects); use --overwrite to replace them, "
            "or another --out"
        )
    stage = Path(tempfile.mkdtemp(prefix="streamvol-shard-"))
    try:
        try:
            result = shard(config, stage / "set", **options)
        except NotEnoughSpace as error:
            raise NotEnoughSpace(
                f"{error} ({url} is written under {stage.parent} before it is uploaded; "
                "TMPDIR chooses that folder)"
            ) from None
        manifest = join(root, MANIFEST)
        if present:  # the manifest goes first, so no reader pairs it with the new tars
            if fs.exists(manifest):
                fs.rm_file(manifest)
            fs.rm([p for p in present if p != manifest])
        with contextlib.suppress(FileExistsError):  # s3fs: a bucket that exists
            fs.makedirs(root, exist_ok=True)
        names = sorted(shard_records(result.manifest))
        _upload(fs, [(result.out / name, join(root, name)) for name in names], progress)
        fs.put_file(str(result.out / MANIFEST), manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dataclasses.replace(result, out=url, seconds=time.perf_counter() - started)


UPLOADS = 4  # tars sent at once: one stream rarely fills the link to object storage


def _upload(
    fs: Any, pairs: list[tuple[Path, str]], progress: Callable[[int, int], None] | None
) -> None:
    """Put each local file at its remote path, ``UPLOADS`` at a time, reporting bytes sent."""
    from fsspec.callbacks import Callback

    sizes = [local.stat().st_size for local, _ in pairs]
    total, sent, lock = sum(sizes), 0, threading.Lock()

    def report(n: int) -> None:
        nonlocal sent
        with lock:
            sent += n
            if progress:
                progress(sent, total)

    class Sent(Callback):
        """A file's bytes as they are handed over, its last byte once the put returns (a
        multipart upload is not there until it is completed)."""

        def relative_update(self, inc: int = 1) -> None:
            counted = min(inc, self.size - 1 - self.value)
            if counted > 0:
                self.value += counted
                report(counted)

    def put(pair: tuple[Path, str], size: int) -> None:
        counted = Sent(size=size)
        fs.put_file(str(pair[0]), pair[1], callback=counted)
        report(size - counted.value)

    with ThreadPoolExecutor(UPLOADS) as pool:
        list(pool.map(put, pairs, sizes))


def _write_all(
    config: ShardConfig,
    prepared: Prepared,
    jobs: list[tuple[str, list[Crop]]],
    out: Path,
    overwrite: bool,
    client: Any,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, ShardRecord], set[str]]:
    """Write what is not finished yet; return every shard's record, and the names skipped."""
    encoding = Encoding(
        crop=config.crop,
        margin=prepared.margin,
        pad="reflect" if config.pad == "none" else config.pad,
        dtype=config.dtype,
        low=prepared.stats["p0_5"] if prepared.stats else 0.0,
        high=prepared.stats["p99_5"] if prepared.stats else 1.0,
        summarise=prepared.stats is None,
    )
    inputs = shard_inputs(prepared, jobs, config.dtype)
    finished = claim_folder(out, config, overwrite, inputs)
    records = dict(finished)
    todo = [(name, crops) for name, crops in jobs if name not in finished]
    if progress:
        progress(len(finished), len(jobs))

    def done(record: ShardRecord) -> None:
        records[record.name] = record
        if progress:
            progress(len(records), len(jobs))

    run_tasks(todo, out, prepared.sources, encoding, client, done, inputs)
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
