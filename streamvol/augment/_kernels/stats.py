"""The raw min, max and weighted sum of a stored block in one pass (gamma's range and
contrast's centre, ``_cpu.block_stats``). Inlines nothing from other files."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def weighted_stats(
    block: np.ndarray, wz: np.ndarray, wy: np.ndarray, wx: np.ndarray, x_ones: bool
) -> tuple[float, float, float]:
    """min, max and ``sum(block[z, y, x] * wz[z] * wy[y] * wx[x])`` (float64) of a 3D block of
    any strides, one read of each voxel; ``x_ones``: every ``wx`` is 1 (a row then sums as it
    is, the common case)."""
    nz, ny, nx = block.shape
    low, high, total = np.inf, -np.inf, 0.0
    for z in range(nz):
        for y in range(ny):
            row = block[z, y]
            lo, hi, s = row[0], row[0], 0.0
            if x_ones:
                for x in range(nx):
                    v = row[x]
                    lo, hi, s = min(lo, v), max(hi, v), s + v
            else:
                for x in range(nx):
                    v = row[x]
                    lo, hi, s = min(lo, v), max(hi, v), s + np.float64(v) * wx[x]
            low, high = min(low, np.float64(lo)), max(high, np.float64(hi))
            total += s * (wz[z] * wy[y])
    return low, high, total
