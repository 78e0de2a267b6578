"""The shard set's manifest: read, write atomically, verify, and the intensity statistics in it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from streamvol.errors import BadVolumeValues, ShardError
from streamvol.io import Volume

FORMAT = "streamvol-shards"
VERSION = 1
MANIFEST = "manifest.json"
_PERCENTILE_SAMPLE = 2_000_000  # voxels per source for the robust percentiles


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON under a temporary name, fsync, then rename over ``path``."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path}: no manifest; expected a folder written by `streamvol shard`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: corrupt manifest: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version", 0) > VERSION:
        raise ShardError(
            f"{path}: manifest version {manifest['version']} is newer than this streamvol "
            f"reads ({VERSION}); upgrade streamvol"
        )
    return manifest


def shard_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every shard's record by file name, over all splits."""
    return {rec["name"]: rec for shards in manifest["splits"].values() for rec in shards}


def verify(folder: str | Path) -> list[str]:
    """Check every shard's size, sha256 and sample count against the manifest; return problems."""
    import tarfile

    from streamvol.shard.write import file_sha256

    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = []
    for name, rec in shard_records(manifest).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != rec["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {rec['bytes']}")
            continue
        if file_sha256(path) != rec["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
            continue
        with tarfile.open(path) as tar:
            keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
        if len(keys) != rec["count"]:
            problems.append(f"{path}: {len(keys)} samples, manifest says {rec['count']}")
    return problems


def intensity_stats(volumes: Sequence[Volume]) -> dict[str, float]:
    """Mean, std, min, max over all voxels and 0.5 / 99.5 percentiles (subsampled), in one pass.

    Raises ``BadVolumeValues`` naming the file when a volume holds NaN or Inf.
    """
    sums, squares, counts, lows, highs, bad, samples = [], [], [], [], [], [], []
    for vol in volumes:
        data = vol.data
        as64 = data.astype(np.float64)
        sums.append(as64.sum())
        squares.append((as64**2).sum())
        counts.append(data.size)
        lows.append(data.min())
        highs.append(data.max())
        is_float = np.issubdtype(data.dtype, np.floating)
        bad.append((~da.isfinite(data)).sum() if is_float else da.zeros((), dtype=int))
        step = max(1, round((data.size / _PERCENTILE_SAMPLE) ** (1 / 3)))
        samples.append(data[::step, ::step, ::step].ravel())
    sums, squares, lows, highs, bad, samples = dask.compute(
        sums, squares, lows, highs, bad, samples
    )
    for vol, n_bad in zip(volumes, bad, strict=True):
        if n_bad:
            raise BadVolumeValues(
                f"{vol.path}: {int(n_bad)} NaN or Inf voxels; expected finite values "
                f"(fill or mask them before sharding)"
            )
    n = float(sum(counts))
    mean = sum(sums) / n
    var = max(sum(squares) / n - mean**2, 0.0)
    pooled = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples])
    p_lo, p_hi = np.percentile(pooled, [0.5, 99.5])
    return {
        "mean": float(mean),
        "std": float(math.sqrt(var)),
        "min": float(min(lows)),
        "max": float(max(highs)),
        "p0_5": float(p_lo),
        "p99_5": float(p_hi),
    }
