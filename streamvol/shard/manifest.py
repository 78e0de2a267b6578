"""The shard set's manifest as the sharder writes it: the intensity statistics in it, and the
checks of a written set (``verify``); reading it is ``streamvol.core.manifest``'s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask
import numba
import numpy as np

from streamvol.core.files import write_json_atomic
from streamvol.core.manifest import (
    CHECKSUM,
    FORMAT,
    MANIFEST,
    VERSION,
    check_manifest,
    is_url,
    join,
    member_checksum,
    read_manifest,
    shard_records,
)
from streamvol.errors import BadVolumeValues
from streamvol.io import Volume

__all__ = [
    "CHECKSUM",
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "check_manifest",
    "intensity_stats",
    "is_url",
    "join",
    "member_checksum",
    "read_manifest",
    "shard_records",
    "write_json_atomic",
]

_PERCENTILE_SAMPLE = 2_000_000  # voxels per source for the robust percentiles


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


def _chunk_summary(block: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's ``_moments`` and its voxels at every ``step`` along each axis (from the chunk's
    corner: as uniform a subsample as a global stride, with one task per chunk)."""
    block = np.ascontiguousarray(block)
    return np.array(_moments(block.reshape(-1))), block[::step, ::step, ::step].ravel()


def intensity_stats(volumes: Sequence[Volume], *, dtype: str = "keep") -> dict[str, float]:
    """Mean, std, min, max over all voxels and 0.5 / 99.5 percentiles (subsampled), in one pass
    that reads every chunk once.

    Raises ``BadVolumeValues`` naming the file when a volume holds NaN or Inf, or values that
    the stored ``dtype`` cannot hold: beyond float16's range (stored as Inf), or, for uint8
    scaled by the percentiles, percentiles that are equal (nothing left to scale).
    """
    tasks, counts = [], []
    for vol in volumes:
        data = vol.data
        step = max(1, round((data.size / _PERCENTILE_SAMPLE) ** (1 / 3)))
        chunks = data.to_delayed().ravel()
        tasks.append([dask.delayed(_chunk_summary)(chunk, step) for chunk in chunks])
        counts.append(data.size)
    (summaries,) = dask.compute(tasks)
    moments = [np.stack([m for m, _ in per]) for per in summaries]  # (chunks, 5) per volume
    samples = [x for per in summaries for _, x in per]
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
