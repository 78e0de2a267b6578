"""The output folder of a local run: refuse it, resume in it, or start afresh (``claim_folder``).

A folder is ours when it is empty or holds a set made by the same configuration (its digest,
recorded under ``STATE`` while a run is in progress and in the manifest after). A finished
shard is kept when its sha256 still matches its record and it was made from the same inputs
(``shard_inputs``: its planned crops, the class names, and the size and modification time of
every file of its sources); everything else is rewritten, so a rerun after a mask, a pick file
or a volume changed rewrites the shards that read them, and only those. The caller holds the
folder's writer lock (``streamvol.core.lock``) around all of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamvol.core.lock import LOCK
from streamvol.errors import ShardError
from streamvol.shard.config import ShardConfig
from streamvol.shard.manifest import MANIFEST, read_manifest, shard_records, write_json_atomic
from streamvol.shard.write import ShardRecord, file_sha256

if TYPE_CHECKING:
    from streamvol.shard.plan import Crop
    from streamvol.shard.regions import Tile
    from streamvol.shard.sources import Prepared

__all__ = ["STATE", "claim_folder", "publish", "shard_inputs"]

# while a run is in progress: its configuration, and each finished shard with its record; the
# shards move into the folder (``publish``) once all are written, so a run that stops on bad
# input leaves nothing beside what the folder held, and its rerun keeps what it finished
STATE = ".streamvol"


def claim_folder(
    out: Path, config: ShardConfig, overwrite: bool, planned: dict[str, str]
) -> dict[str, ShardRecord]:
    """Make ``out`` ours; return the records of shards already finished, intact and made from
    the inputs ``planned`` (shard name -> ``shard_inputs``) gives them."""
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
        path = state / name if (state / name).is_file() else out / name
        intact = path.is_file() and path.stat().st_size == rec["bytes"] and "checksums" in rec
        same = rec.get("inputs") == planned.get(name)
        if name in planned and same and intact and file_sha256(path) == rec["sha256"]:
            finished[name] = ShardRecord.from_json(rec)
    for stale in [*out.glob("*.tar.partial"), *state.glob("*.tar.partial")]:
        stale.unlink()
    return finished


def shard_inputs(
    prepared: Prepared, jobs: Sequence[tuple[str, Sequence[Crop | Tile]]], dtype: str
) -> dict[str, str]:
    """Each shard's inputs as one sha256: its crops or regions (keys, classes, picks), the
    class names, the stored margin, the files of each source it reads (path, size,
    modification time of every file of the volume, mask and picks) and, for uint8 storage, the
    set's percentiles."""
    files = {
        m["id"]: _files_digest([m["path"], m["mask"], *m["points"]]) for m in prepared.source_meta
    }
    common = [
        list(prepared.plan.class_names),
        list(prepared.margin),
        prepared.stats if dtype == "uint8" else None,
    ]
    inputs = {}
    for name, items in jobs:
        h = hashlib.sha256(json.dumps(common, default=float).encode())
        for item in items:
            points = getattr(item, "points", None)
            described = {f.name: getattr(item, f.name) for f in fields(item) if f.name != "points"}
            h.update(json.dumps(described, sort_keys=True, default=int).encode())
            if points is not None:
                h.update(np.ascontiguousarray(points).tobytes())
        for source in sorted({item.source for item in items}):
            h.update(f"{source}:{files[source]}".encode())
        inputs[name] = h.hexdigest()
    return inputs


def _files_digest(paths: Iterable[str | None]) -> str:
    """sha256 of the path, size and modification time of every file under ``paths``."""
    entries = []
    for path in _files(filter(None, paths)):
        st = os.stat(path)
        entries.append((path, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def _files(roots: Iterable[str]) -> Iterator[str]:
    for root in roots:
        if os.path.isfile(root):
            yield root
        for folder, _, names in os.walk(root):  # nothing for a file
            yield from (os.path.join(folder, name) for name in names)


def publish(out: Path, names: Iterable[str]) -> None:
    """Move the shards written under ``STATE`` into ``out``, once every one is written."""
    for name in names:
        if (out / STATE / name).is_file():
            os.replace(out / STATE / name, out / name)


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
