"""A shard set at an fsspec URL (``s3://bucket/set``): refuse it, resume in it, or start afresh,
as ``folder`` does for a local folder (without a lock: object stores have none to take).

Each task writes its tar where it runs and puts it at the URL whole, then its record under
``STATE``; a put is atomic, so a record means its tar is all there. The manifest goes last and
``STATE`` is removed after it, so a reader sees the whole set or none of it. A rerun of the same
command keeps the shards whose record names the same inputs (``folder.shard_inputs``) and whose
object has the recorded size, and writes the rest; their sha256 is not read back (that would
download the set: ``streamvol inspect --verify`` does it).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from streamvol.core.manifest import reaching
from streamvol.errors import ShardError
from streamvol.shard.config import ShardConfig
from streamvol.shard.folder import STATE
from streamvol.shard.manifest import MANIFEST, check_manifest, join, shard_records
from streamvol.shard.run import UrlTarget
from streamvol.shard.write import ShardRecord

__all__ = ["UrlSet"]


@dataclass(frozen=True)
class UrlSet:
    """The set at ``url``; ``open`` refuses one made by another command unless overwritten."""

    url: str
    storage: dict[str, Any]
    fs: Any  # the fsspec file system, and the set's path in it
    root: str

    @classmethod
    def open(
        cls, url: str, storage: dict[str, Any], config: ShardConfig, overwrite: bool
    ) -> UrlSet:
        """Before anything is read: refuse a URL that holds objects of another command (or
        none of streamvol's) unless ``overwrite``."""
        import fsspec

        with reaching(url):
            fs, root = fsspec.core.url_to_fs(url, **storage)
            remote = cls(url, storage, fs, root)
            present = remote._objects()
            previous = remote._previous_digest()
        if present and previous != config.digest() and not overwrite:
            what = "a different command" if previous else "objects streamvol did not write"
            raise ShardError(
                f"{url}: not empty ({len(present)} objects) and holds {what}; use --overwrite "
                "to replace them, or another --out"
            )
        return remote

    @property
    def target(self) -> UrlTarget:
        """What each task needs to put its tar and record here."""
        return UrlTarget(self.url, self.storage)

    def claim(self, config: ShardConfig, planned: dict[str, str]) -> dict[str, ShardRecord]:
        """Make the URL ours (the manifest is removed first, so no reader pairs it with the
        tars this run writes); return the records of shards already there, made from the
        inputs ``planned`` (shard name -> ``shard_inputs``) gives them."""
        digest = config.digest()
        present = self._objects()
        known = self._known_records(present) if self._previous_digest() == digest else {}
        manifest = join(self.root, MANIFEST)
        if manifest in present:
            self.fs.rm_file(manifest)
        if not known:  # another command's set (overwritten), or nothing to keep
            self._remove([p for p in present if p != manifest])
            present = {}
        with contextlib.suppress(FileExistsError):  # s3fs: a bucket that exists
            self.fs.makedirs(self.root, exist_ok=True)
        config_json = {"digest": digest, "config": asdict(config)}
        self.fs.pipe_file(join(self.root, f"{STATE}/config.json"), _json(config_json))
        finished = {}
        for name, rec in known.items():
            size = present.get(join(self.root, name))
            same = rec.get("inputs") == planned.get(name)
            if name in planned and same and size == rec["bytes"] and "checksums" in rec:
                finished[name] = ShardRecord.from_json(rec)
        return finished

    def publish(self, manifest: dict[str, Any]) -> None:
        """The manifest, once every tar is there; then the run's records go."""
        self.fs.pipe_file(join(self.root, MANIFEST), _json(manifest))
        state = join(self.root, STATE)
        self._remove([p for p in self._objects() if p.startswith(state + "/")])

    def _objects(self) -> dict[str, int]:
        """Every object under the set, path -> bytes."""
        if not self.fs.isdir(self.root):
            return {}
        found = self.fs.find(self.root, detail=True)
        return {path: int(info.get("size") or 0) for path, info in found.items()}

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(join(self.root, name)))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _previous_digest(self) -> str | None:
        for name in (f"{STATE}/config.json", MANIFEST):
            payload = self._read(name)
            if isinstance(payload, dict):
                return payload.get("digest") or payload.get("config_sha256")
        return None

    def _known_records(self, present: dict[str, int]) -> dict[str, dict[str, Any]]:
        """The records of a finished set's manifest, and of the shards a stopped run put
        (among the ``present`` objects)."""
        records: dict[str, dict[str, Any]] = {}
        manifest = self._read(MANIFEST)
        if manifest is not None:
            with contextlib.suppress(ShardError):  # a corrupt manifest: rely on the records
                records.update(shard_records(check_manifest(manifest, join(self.url, MANIFEST))))
        state = join(self.root, STATE)
        for path in present:
            if path.startswith(state + "/") and path.endswith(".tar.json"):
                record = self._read(path[len(self.root) + 1 :])
                if isinstance(record, dict) and "name" in record:
                    records[record["name"]] = record
        return records

    def _remove(self, paths: list[str]) -> None:
        if paths:
            self.fs.rm(paths)


def _json(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=1) + "\n").encode()
