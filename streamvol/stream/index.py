"""Where the samples of a shard set are: shard URLs, sample counts and member byte offsets.

A shard folder's manifest already records every shard's keys and offsets; tars given without a
manifest are indexed by reading their headers once. Any fsspec URL works (``s3://``,
``file://``, ...); plain paths are local files.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec

from streamvol.core.manifest import MANIFEST, reaching, read_manifest
from streamvol.errors import ShardError
from streamvol.stream.decode import Expected, MappedFile, split_name


@dataclass(frozen=True)
class ShardInfo:
    """One tar: its URL, and per sample its key and the byte offset of its first member.

    In a region set each sample is a region and ``units`` says how many crops an epoch draws
    from each; the epoch's samples are then those crops.
    """

    url: str
    keys: tuple[str, ...]
    offsets: tuple[int, ...]
    size: int | None = None
    units: tuple[int, ...] | None = None
    checksums: tuple[tuple[str, ...], ...] | None = None  # per sample, per member (manifest v2)

    @property
    def count(self) -> int:
        """What an epoch yields from this tar: its samples, or its regions' crops."""
        return len(self.keys) if self.units is None else sum(self.units)

    @classmethod
    def from_record(cls, url: str, rec: dict[str, Any]) -> ShardInfo:
        """From a manifest's shard record (keys, offsets, bytes, units of regions, member
        checksums)."""
        checks = rec.get("checksums")
        return cls(
            url,
            tuple(rec["keys"]),
            tuple(rec["offsets"]),
            rec["bytes"],
            tuple(rec["units"]) if rec.get("units") is not None else None,
            None if checks is None else tuple(map(tuple, checks)),
        )


@dataclass(frozen=True)
class ShardSet:
    """The shards an epoch reads, in a fixed order, plus the manifest when there is one.

    ``storage`` holds fsspec storage options (credentials, endpoint) for remote URLs;
    ``verify`` whether members are checked against the checksums the manifest records.
    """

    shards: tuple[ShardInfo, ...]
    manifest: dict[str, Any] | None = field(default=None, compare=False)
    storage: dict[str, Any] = field(default_factory=dict, compare=False)
    verify: bool = field(default=True, compare=False)

    def expected(self, shard: int, start: int, count: int) -> Expected:
        """What samples ``start .. start + count`` of shard ``shard`` must be: their keys, their
        members' checksums (when verifying and recorded), and whether they end the tar."""
        info = self.shards[shard]
        checks = info.checksums if self.verify else None
        stored = (self.manifest or {}).get("stored_shape")
        return Expected(
            info.keys[start : start + count],
            None if checks is None else checks[start : start + count],
            start + count == len(info.keys),
            tuple(stored) if stored and info.units is None else None,
        )

    def open(self, url: str) -> Any:
        """A shard for ``read_members``: local files memory-mapped, URLs through fsspec."""
        protocol, path = fsspec.core.split_protocol(url)
        if protocol in (None, "file"):
            return MappedFile(path)
        return open_file(url, self.storage)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


def open_file(url: str, storage: dict[str, Any] | None = None) -> Any:
    """Open a local path or any fsspec URL for binary reading (seekable)."""
    return fsspec.open(url, "rb", **(storage or {})).open()


def _join(base: str, name: str) -> str:
    if "://" in base:
        return posixpath.join(base.rstrip("/"), name)
    return str(fsspec.core.strip_protocol(base)).rstrip("/") + "/" + name


def _exists(url: str, storage: dict[str, Any]) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **storage)
    return fs.exists(path)


def read_manifest_url(folder: str, storage: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The manifest of a shard folder (local or URL), or None when there is none."""
    with reaching(folder):
        if not _exists(_join(folder, MANIFEST), storage or {}):
            return None
    return read_manifest(folder, storage)


def split_names(manifest: dict[str, Any], split: str, folds: Sequence[int] | None) -> list[str]:
    """The manifest's splits that ``split`` / ``folds`` select, checked to exist."""
    wanted = [f"fold{k}" for k in folds] if folds is not None else [split]
    missing = [name for name in wanted if name not in manifest["splits"]]
    if missing:
        raise ShardError(
            f"split(s) {', '.join(missing)} not in this shard set; "
            f"it has {', '.join(manifest['splits'])}"
        )
    return wanted


def index_tar(url: str, storage: dict[str, Any] | None = None) -> ShardInfo:
    """Index a tar without a manifest by reading its member headers once."""
    keys: list[str] = []
    offsets: list[int] = []
    try:
        with open_file(url, storage) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar.getmembers():
                key, _ = split_name(member.name)
                if not keys or keys[-1] != key:
                    keys.append(key)
                    offsets.append(member.offset)
            f.seek(tar.offset)
            end = f.read(2 * tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError) as exc:
        raise ShardError(f"{url}: not a readable tar shard: {exc}") from exc
    if end != bytes(2 * tarfile.BLOCKSIZE):
        raise ShardError(
            f"{url}: truncated tar (no end-of-archive marker after {len(keys)} samples)"
        )
    return ShardInfo(url, tuple(keys), tuple(offsets))


def resolve(
    source: str | Sequence[str],
    *,
    split: str = "train",
    folds: Sequence[int] | None = None,
    storage: dict[str, Any] | None = None,
    verify: bool = True,
) -> ShardSet:
    """Turn a shard folder, a list of tars, or a brace pattern into an ordered ``ShardSet``;
    ``verify`` checks members against the manifest's checksums as they are read."""
    storage = dict(storage or {})
    if isinstance(source, str | bytes) or hasattr(source, "__fspath__"):
        source = str(source)
        if not source.endswith(".tar") and "{" not in source:
            manifest = read_manifest_url(source, storage)
            if manifest is None:
                raise ShardError(
                    f"{source}: no manifest.json; expected a shard folder written by "
                    "`streamvol shard`, tar paths, or a brace pattern like "
                    "train-{000000..000009}.tar"
                )
            shards = [
                ShardInfo.from_record(_join(source, rec["name"]), rec)
                for name in split_names(manifest, split, folds)
                for rec in manifest["splits"][name]
            ]
            return ShardSet(tuple(shards), manifest, storage, verify)
        import braceexpand

        urls = list(braceexpand.braceexpand(source))
    else:
        urls = [str(u) for u in source]
    if not urls:
        raise ShardError("no shard given; expected a folder, tar paths or a brace pattern")
    infos, manifests = _index_with_manifest(urls, storage)
    # Tars of one shard folder keep its manifest (crop, margin, statistics).
    manifest = next(iter(manifests.values())) if len(manifests) == 1 else None
    return ShardSet(tuple(infos), manifest, storage, verify)


def _index_with_manifest(
    urls: list[str], storage: dict[str, Any]
) -> tuple[list[ShardInfo], dict[str, dict[str, Any] | None]]:
    """Index tars, taking keys and offsets from their folder's manifest when it lists them."""
    infos = []
    manifests: dict[str, dict[str, Any] | None] = {}
    for url in urls:
        folder, name = posixpath.split(url)
        if folder not in manifests:
            manifests[folder] = read_manifest_url(folder or ".", storage)
        manifest = manifests[folder]
        records = (
            {r["name"]: r for sh in manifest["splits"].values() for r in sh} if manifest else {}
        )
        rec = records.get(name)
        infos.append(ShardInfo.from_record(url, rec) if rec else index_tar(url, storage))
    return infos, manifests
