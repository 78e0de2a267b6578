"""The output folder of a local run: refuse it, resume in it, or start afresh (``claim_folder``).

A folder is ours when it is empty or holds a set made by the same configuration (its digest,
recorded under ``STATE`` while a run is in progress and in the manifest after); finished shards
whose sha256 still matches their record are kept, everything else is rewritten. The caller holds
the folder's writer lock (``streamvol.shard.lock``) around all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamvol.errors import ShardError
from streamvol.shard.config import ShardConfig
from streamvol.shard.lock import LOCK
from streamvol.shard.manifest import MANIFEST, read_manifest, shard_records, write_json_atomic
from streamvol.shard.write import ShardRecord, file_sha256

__all__ = ["STATE", "claim_folder", "publish"]

# while a run is in progress: its configuration, and each finished shard with its record; the
# shards move into the folder (``publish``) once all are written, so a run that stops on bad
# input leaves nothing beside what the folder held, and its rerun keeps what it finished
STATE = ".streamvol"


def claim_folder(
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
        path = state / name if (state / name).is_file() else out / name
        intact = path.is_file() and path.stat().st_size == rec["bytes"] and "checksums" in rec
        if name in planned and intact and file_sha256(path) == rec["sha256"]:
            finished[name] = ShardRecord.from_json(rec)
    for stale in [*out.glob("*.tar.partial"), *state.glob("*.tar.partial")]:
        stale.unlink()
    return finished


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
