"""Separable Gaussian blur in place: a pass of its own over the output, only when a blur was
drawn (the taps come from ``_cpu.blur_weights``). Inlines nothing from other files."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def blur(vol: np.ndarray, weights: np.ndarray) -> None:
    """Separable Gaussian blur in place, axis x then y then z; edges repeat the border voxel
    (scipy's ``mode="nearest"``). ``weights`` (2r + 1,) float64 sums to 1."""
    r = (weights.shape[0] - 1) // 2
    nz, ny, nx = vol.shape
    line = np.empty(max(nz, ny, nx) + 2 * r)
    for axis in range(3):
        n = (nx, ny, nz)[axis]
        a_n, b_n = ((nz, ny), (nz, nx), (ny, nx))[axis]
        for a in range(a_n):
            for b in range(b_n):
                for i in range(n + 2 * r):
                    k = min(max(i - r, 0), n - 1)
                    if axis == 0:
                        line[i] = vol[a, b, k]
                    elif axis == 1:
                        line[i] = vol[a, k, b]
                    else:
                        line[i] = vol[k, a, b]
                for i in range(n):
                    s = 0.0
                    for j in range(2 * r + 1):
                        s += weights[j] * line[i + j]
                    if axis == 0:
                        vol[a, b, i] = s
                    elif axis == 1:
                        vol[a, i, b] = s
                    else:
                        vol[i, a, b] = s
