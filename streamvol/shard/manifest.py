"""The shard set's manifest: read, write atomically, verify, and the intensity statistics in it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import numba
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


def intensity_stats(volumes: Sequence[Volume]) -> dict[str, float]:
    """Mean, std, min, max over all voxels and 0.5 / 99.5 percentiles (subsampled), in one pass
    that reads every chunk once.

    Raises ``BadVolumeValues`` naming the file when a volume holds NaN or Inf.
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
    n = float(sum(counts))
    mean = every[:, 0].sum() / n
    var = max(every[:, 1].sum() / n - mean**2, 0.0)
    pooled = np.concatenate([np.asarray(x, np.float64) for x in samples])
    p_lo, p_hi = np.percentile(pooled, [0.5, 99.5])
    return {
        "mean": float(mean),
        "std": float(math.sqrt(var)),
        "min": float(every[:, 2].min()),
        "max": float(every[:, 3].max()),
        "p0_5": float(p_lo),
        "p99_5": float(p_hi),
    }
