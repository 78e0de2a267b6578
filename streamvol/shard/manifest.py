"""The shard set's manifest: read, write atomically, verify, and the intensity statistics in it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import numba
import numpy as np
import xxhash

from streamvol.errors import BadVolumeValues, ShardError
from streamvol.io import Volume

FORMAT = "streamvol-shards"
VERSION = 2  # 2: per-member checksums in every shard record
CHECKSUM = "xxh3_64"  # of each member's bytes, hex; fast enough to check on every read
MANIFEST = "manifest.json"
_PERCENTILE_SAMPLE = 2_000_000  # voxels per source for the robust percentiles


def member_checksum(data: bytes | np.ndarray) -> str:
    """The checksum recorded for each member: xxh3-64 of its bytes, as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


def is_url(path: str | Path) -> bool:
    """Whether ``path`` names a location through fsspec (``s3://``, ``file://``, ...)."""
    return "://" in str(path)


def join(folder: str | Path, name: str) -> str:
    """``folder/name`` for a local folder or a URL (never a local path made from a URL)."""
    return str(folder).rstrip("/") + "/" + name


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON under a temporary name, fsync, then rename over ``path``."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


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

            with fsspec.open(path, "rb", **(storage or {})) as f:
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


def verify(folder: str | Path, storage: dict[str, Any] | None = None) -> list[str]:
    """Check every shard against the manifest: size, sha256, then each sample's key and its
    members' checksums, and the sample count; report tars the manifest does not list.

    ``folder`` may be an fsspec URL. Returns the problems found, one line each.
    """
    import fsspec

    manifest = read_manifest(folder, storage)
    fs, root = fsspec.core.url_to_fs(str(folder), **(storage or {}))
    problems = []
    records = shard_records(manifest)
    listed = {posixpath.basename(p) for p in fs.glob(join(root, "*.tar"))}
    for name in sorted(listed - set(records)):
        problems.append(f"{join(folder, name)}: a tar the manifest does not list")
    for name, rec in records.items():
        problem = _verify_shard(fs, join(root, name), join(folder, name), rec)
        if problem:
            problems.append(problem)
    return problems


def _verify_shard(fs: Any, path: str, where: str, rec: dict[str, Any]) -> str | None:
    from streamvol.stream.decode import Expected, MappedFile, iter_samples

    if not fs.isfile(path):
        return f"{where}: missing"
    size = fs.size(path)
    if size != rec["bytes"]:
        return f"{where}: {size} bytes, manifest says {rec['bytes']}"
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            digest.update(block)
    if digest.hexdigest() != rec["sha256"]:
        return f"{where}: sha256 differs from the manifest (the file changed since it was written)"
    local = fs.protocol in ("file", ("file", "local"))
    try:  # every key in order, every member's checksum, and nothing after the last sample
        with MappedFile(path) if local else fs.open(path, "rb") as f:
            for _ in iter_samples(f, where, expect=Expected.of(rec), require=()):
                pass
    except ShardError as exc:
        return str(exc)
    return None


@numba.njit(cache=True, nogil=True)
def _moments(flat: np.ndarray) -> tuple[float, float, float, float, int]:
    """(sum, sum of squares, min, max) of the finite values, and how many are not finite:
    one pass over a chunk (five dask reductions read it five times)."""
    total, squares, low, high, bad = 0.0, 0.0, np.inf, -np.inf, 0
    for v in flat:
        x = np.float64(v)
        if not np.isfinite(x):
            bad += 1
            continue
        total += x
        squares += x * x
        low = min(low, x)
        high = max(high, x)
    return total, squares, low, high, bad


def _block_moments(block: np.ndarray) -> np.ndarray:
    """A chunk's ``_moments`` as a (1, 1, 5) block (``map_blocks`` keeps the read fused)."""
    return np.array(_moments(np.ascontiguousarray(block).reshape(-1))).reshape(1, 1, 5)


def intensity_stats(volumes: Sequence[Volume], *, dtype: str = "keep") -> dict[str, float]:
    """Mean, std, min, max over all voxels and 0.5 / 99.5 percentiles (subsampled), in one pass
    that reads every chunk once.

    Raises ``BadVolumeValues`` naming the file when a volume holds NaN or Inf, or values that
    the stored ``dtype`` cannot hold: beyond float16's range (stored as Inf), or, for uint8
    scaled by the percentiles, percentiles that are equal (nothing left to scale).
    """
    moments, counts, samples = [], [], []
    for vol in volumes:
        data = vol.data
        nz, ny, nx = data.numblocks
        per_chunk = data.map_blocks(
            _block_moments, dtype=np.float64, chunks=((1,) * nz, (1,) * ny, (5,) * nx)
        )
        moments.append(per_chunk)
        counts.append(data.size)
        step = max(1, round((data.size / _PERCENTILE_SAMPLE) ** (1 / 3)))
        samples.append(data[::step, ::step, ::step].ravel())
    moments, samples = dask.compute(moments, samples)
    moments = [np.asarray(m).reshape(-1, 5) for m in moments]  # (chunks, 5)
    for vol, m in zip(volumes, moments, strict=True):
        if m[:, 4].sum():
            raise BadVolumeValues(
                f"{vol.path}: {int(m[:, 4].sum())} NaN or Inf voxels; expected finite values "
                f"(fill or mask them before sharding)"
            )
    every = np.concatenate(moments)
    if dtype == "float16":
        lows = [m[:, 2].min() for m in moments]
        highs = [m[:, 3].max() for m in moments]
        _check_float16(volumes, lows, highs)
    n = float(sum(counts))
    mean = every[:, 0].sum() / n
    var = max(every[:, 1].sum() / n - mean**2, 0.0)
    pooled = np.concatenate([np.asarray(x, np.float64) for x in samples])
    p_lo, p_hi = np.percentile(pooled, [0.5, 99.5])
    if dtype == "uint8" and not p_hi > p_lo:
        where = volumes[0].path if len(volumes) == 1 else f"{len(volumes)} sources"
        raise BadVolumeValues(
            f"{where}: --dtype uint8 scales the 0.5 and 99.5 percentiles to 0 and 255, but both "
            f"are {p_lo:.6g} (a constant volume?), so every voxel would be stored as 0 or 255; "
            "expected a spread of values; use --dtype keep"
        )
    return {
        "mean": float(mean),
        "std": float(math.sqrt(var)),
        "min": float(every[:, 2].min()),
        "max": float(every[:, 3].max()),
        "p0_5": float(p_lo),
        "p99_5": float(p_hi),
    }


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def _check_float16(volumes: Sequence[Volume], lows: Sequence[Any], highs: Sequence[Any]) -> None:
    """Refuse values float16 would store as Inf, naming the file and its range."""
    for vol, low, high in zip(volumes, lows, highs, strict=True):
        if max(abs(float(low)), abs(float(high))) > FLOAT16_MAX:
            raise BadVolumeValues(
                f"{vol.path}: values span {float(low):.6g} to {float(high):.6g}, beyond "
                f"float16's range of +-{FLOAT16_MAX:g} (they would be stored as Inf); "
                "use --dtype keep, or --dtype uint8 (scaled by the data set's 0.5-99.5 "
                "percentiles, recorded in the manifest)"
            )
