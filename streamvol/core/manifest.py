"""The manifest of a shard set, as readers need it: its format, the checks that make it
trustworthy, and each member's checksum. Writing it (and the statistics in it) is the sharder's."""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from streamvol.errors import ShardError, StorageUnreachable, StreamvolError

FORMAT = "streamvol-shards"
VERSION = 2  # 2: per-member checksums in every shard record
CHECKSUM = "xxh3_64"  # of each member's bytes, hex; fast enough to check on every read
MANIFEST = "manifest.json"


def member_checksum(data: bytes | np.ndarray) -> str:
    """The checksum recorded for each member: xxh3-64 of its bytes, as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


def normalization(manifest: Mapping[str, Any]) -> tuple[float, float]:
    """(offset, scale) that make a set's stored crops ``(value - offset) * scale``: mean 0 and
    std 1 in the sources' values. A uint8 set stores ``(value - p0_5) / step`` (``step``: the
    0.5-99.5 percentile range over 255), so its offset and scale are in those units."""
    stats = manifest.get("stats")
    if not stats:
        return 0.0, 1.0
    mean, std = float(stats["mean"]), max(float(stats["std"]), 1e-12)
    if manifest.get("dtype") == "uint8":
        step = max(float(stats["p99_5"]) - float(stats["p0_5"]), 1e-12) / 255.0
        return (mean - float(stats["p0_5"])) / step, step / std
    return mean, 1.0 / std


def is_url(path: str | Path) -> bool:
    """Whether ``path`` names a location through fsspec (``s3://``, ``file://``, ...)."""
    return "://" in str(path)


@contextlib.contextmanager
def reaching(url: str | Path) -> Iterator[None]:
    """Report a file system's failure to reach ``url`` (no credentials, a wrong endpoint, access
    denied, no network) as ``StorageUnreachable`` naming it and what to check, not as the
    storage library's traceback; a missing object stays ``FileNotFoundError``."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, StreamvolError):
        raise
    except Exception as exc:
        raise StorageUnreachable(
            f"{url}: could not reach it ({type(exc).__name__}: {exc}); check --storage-options "
            "(key, secret, client_kwargs.endpoint_url) or the AWS_* environment variables"
        ) from exc


def join(folder: str | Path, name: str) -> str:
    """``folder/name`` for a local folder or a URL (never a local path made from a URL)."""
    return str(folder).rstrip("/") + "/" + name


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Refuse a manifest streamvol cannot trust: another format, a newer version, shard names
    that leave the folder, or records whose count, keys, offsets and checksums disagree."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ShardError(f"{where}: format {got!r}, expected {FORMAT!r}")
    version = manifest.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise ShardError(
            f"{where}: manifest version {version!r} is newer than this streamvol reads "
            f"({VERSION}); upgrade streamvol"
        )
    if version >= 2 and manifest.get("checksum") != CHECKSUM:
        raise ShardError(
            f"{where}: member checksums of kind {manifest.get('checksum')!r}; expected {CHECKSUM!r}"
        )
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise ShardError(f"{where}: no 'splits' in the manifest")
    for records in splits.values():
        for rec in records:
            _check_record(rec, where, checksums=version >= 2)
    return manifest


def _check_record(rec: dict[str, Any], where: str, *, checksums: bool) -> None:
    name = rec.get("name")
    if (
        not isinstance(name, str)
        or not name.endswith(".tar")
        or name != posixpath.basename(name)
        or "\\" in name
        or name.startswith(".")
    ):
        raise ShardError(
            f"{where}: shard name {name!r} is not a file of the shard folder; expected a plain "
            "name like train-000000.tar (a manifest never points outside its folder)"
        )
    lengths = {"keys": len(rec["keys"]), "offsets": len(rec["offsets"])}
    if checksums:
        if "checksums" not in rec:
            raise ShardError(f"{where}: shard {name} has no member checksums")
        lengths["checksums"] = len(rec["checksums"])
    if any(n != rec["count"] for n in lengths.values()):
        found = ", ".join(f"{n} {what}" for what, n in lengths.items())
        raise ShardError(
            f"{where}: shard {name} has count {rec['count']} but {found}; expected them equal "
            "(an edited manifest?)"
        )


def read_manifest(folder: str | Path, storage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``; ``folder`` may be an fsspec URL, with
    ``storage`` its options (credentials, endpoint)."""
    path = join(folder, MANIFEST)
    try:
        if is_url(folder):
            import fsspec

            with reaching(folder), fsspec.open(path, "rb", **(storage or {})) as f:
                text = f.read().decode()
        else:
            text = Path(path).read_text()
    except FileNotFoundError:
        raise ShardError(
            f"{path}: no manifest; expected a folder written by `streamvol shard`"
        ) from None
    except IsADirectoryError:
        raise ShardError(f"{path}: a folder, expected the manifest file") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: corrupt manifest: {exc}") from exc
    return check_manifest(manifest, path)


def shard_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every shard's record by file name, over all splits."""
    return {rec["name"]: rec for shards in manifest["splits"].values() for rec in shards}
