"""The shard set's manifest as the sharder writes it: the intensity statistics in it, and the
checks of a written set (``verify``); reading it is ``streamvol.core.manifest``'s."""

from __future__ import annotations

import itertools
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
    "checked_summary",
    "combine_stats",
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


def moments(block: np.ndarray) -> np.ndarray:
    """``_moments`` of a block of any dtype a volume opens with (numba has no float16)."""
    flat = np.ascontiguousarray(block).reshape(-1)
    return np.array(_moments(flat.astype(np.float32) if flat.dtype == np.float16 else flat))


Summary = tuple[np.ndarray, np.ndarray]  # a box's ``_moments`` (5,) and its subsampled voxels


def sample_step(shape: Sequence[int]) -> int:
    """Stride of the percentile subsample along each axis: at most ``_PERCENTILE_SAMPLE``
    voxels of a source."""
    return max(1, math.ceil((math.prod(shape) / _PERCENTILE_SAMPLE) ** (1 / 3) - 1e-9))


def summarise(block: np.ndarray, origin: Sequence[int], step: int) -> Summary:
    """A box's moments, and its voxels on the source's grid of every ``step``-th voxel (counted
    from the volume's corner, so any partition of a volume into boxes gives the same sample)."""
    return moments(block), _on_grid(block, origin, step)


def _on_grid(block: np.ndarray, origin: Sequence[int], step: int) -> np.ndarray:
    first = [-o % step for o in origin]
    return block[first[0] :: step, first[1] :: step, first[2] :: step].ravel()


def _chunk_summaries(vol: Volume) -> list[Any]:
    """One dask task per chunk of a volume: its ``summarise``."""
    data = vol.data
    step = sample_step(data.shape)
    offsets = [np.cumsum((0, *sizes[:-1])) for sizes in data.chunks]
    chunks = data.to_delayed().ravel()
    return [
        dask.delayed(summarise)(chunk, origin, step)
        for chunk, origin in zip(chunks, itertools.product(*offsets), strict=True)
    ]


def intensity_stats(volumes: Sequence[Volume], *, dtype: str = "keep") -> dict[str, float]:
    """Mean, std, min, max over all voxels and 0.5 / 99.5 percentiles (subsampled), in one pass
    that reads every chunk once; raises as ``combine_stats``."""
    (summaries,) = dask.compute([_chunk_summaries(vol) for vol in volumes])
    return combine_stats(volumes, summaries, dtype=dtype)


def combine_stats(
    volumes: Sequence[Volume], summaries: Sequence[Sequence[Summary]], *, dtype: str = "keep"
) -> dict[str, float]:
    """The set's statistics from the ``summarise`` of boxes that partition each volume.

    Raises ``BadVolumeValues`` naming the file when a volume holds NaN or Inf, or values that
    the stored ``dtype`` cannot hold: beyond float16's range (stored as Inf), or, for uint8
    scaled by the percentiles, percentiles that are equal (nothing left to scale).
    """
    boxes = [np.stack([m for m, _ in per]) for per in summaries]  # (boxes, 5) per volume
    for vol, m in zip(volumes, boxes, strict=True):
        if m[:, 4].sum():
            raise BadVolumeValues(
                f"{vol.path}: {int(m[:, 4].sum())} NaN or Inf voxels; expected finite values "
                f"(fill or mask them before sharding)"
            )
    every = np.concatenate(boxes)
    if dtype == "float16":
        for vol, m in zip(volumes, boxes, strict=True):
            check_float16(vol, m[:, 2].min(), m[:, 3].max())
    n = float(sum(vol.data.size for vol in volumes))
    mean = every[:, 0].sum() / n
    var = max(every[:, 1].sum() / n - mean**2, 0.0)
    pooled = np.concatenate([np.asarray(x, np.float64) for per in summaries for _, x in per])
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


def checked_summary(
    vol: Volume, block: np.ndarray, core: tuple[slice, ...], origin: Sequence[int], dtype: str
) -> Summary:
    """``summarise`` of ``block[core]`` (``origin``: the core's corner in the volume), after
    refusing a block that holds NaN or Inf, or values beyond float16's range when ``dtype`` is
    float16: a region set checks each region just before writing it."""
    whole = moments(block)
    if whole[4]:
        raise BadVolumeValues(
            f"{vol.path}: NaN or Inf voxels (at least {int(whole[4])}); expected finite values "
            "(fill or mask them, then rerun: the shards already finished are kept)"
        )
    if dtype == "float16":
        check_float16(vol, whole[2], whole[3])
    step = sample_step(vol.shape)
    if all(s.start == 0 and s.stop == n for s, n in zip(core, block.shape, strict=True)):
        return whole, _on_grid(block, origin, step)
    return summarise(block[core], origin, step)


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def check_float16(vol: Volume, low: Any, high: Any) -> None:
    """Refuse values float16 would store as Inf, naming the file and its range."""
    if max(abs(float(low)), abs(float(high))) > FLOAT16_MAX:
        raise BadVolumeValues(
            f"{vol.path}: values span {float(low):.6g} to {float(high):.6g}, beyond "
            f"float16's range of +-{FLOAT16_MAX:g} (they would be stored as Inf); "
            "use --dtype keep, or --dtype uint8 (scaled by the data set's 0.5-99.5 "
            "percentiles, recorded in the manifest)"
        )
