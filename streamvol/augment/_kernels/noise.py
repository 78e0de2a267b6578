"""The numba half of the counter-based Gaussian noise (the design is in ``_noise``'s docstring):
the quantile table, the per-voxel hash words, and the two kernels that only add noise.

``noise_words`` is inlined into the resampling and intensity kernels (``resample``,
``chain``), which record this file's hash for numba's cache (see the package docstring).
"""

from __future__ import annotations

import numpy as np
from numba import njit

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
GOLDEN32 = 0x9E3779B9
LOWBIAS = (0x7FEB352D, 0x846CA68B)
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TABLE_BITS = 16

# numba sees these module globals as compile-time constants; every step is wrapped in _U32 so
# the arithmetic stays 32-bit (numba widens uint32 products to uint64, which AVX2 cannot vectorise)
_U32 = np.uint32
_G = _U32(GOLDEN32)
_L1, _L2 = _U32(LOWBIAS[0]), _U32(LOWBIAS[1])
_S15, _S16 = _U32(15), _U32(16)
SHIFT = _U32(32 - TABLE_BITS)  # a word's table index is word >> SHIFT
_LOW32, _HIGH = np.uint64(MASK32), np.uint64(32)


def _table() -> np.ndarray:
    """``2**16`` equiprobable standard-normal quantiles, ``ndtri((j + 1/2) / 2**16)``, rescaled
    to unit variance (float32; mean 0 by symmetry, tails to +-4.3)."""
    from scipy.special import ndtri

    n = 1 << TABLE_BITS
    q = ndtri((np.arange(n) + 0.5) / n)
    return (q / np.sqrt(np.mean(q * q))).astype(np.float32)


NOISE_TABLE = _table()


def noise_key(noise_seed: int) -> int:
    """The per-sample key (splitmix64's finaliser of the seed), as a Python int in [0, 2**64)."""
    x = int(noise_seed) & MASK64
    x = ((x ^ (x >> 30)) * MIX1) & MASK64
    x = ((x ^ (x >> 27)) * MIX2) & MASK64
    return x ^ (x >> 31)


@njit(cache=True, inline="always")
def _lowbias32(x: np.uint32) -> np.uint32:
    x = _U32(x ^ (x >> _S16))
    x = _U32(x * _L1)
    x = _U32(x ^ (x >> _S15))
    x = _U32(x * _L2)
    return _U32(x ^ (x >> _S16))


@njit(cache=True, inline="always")
def noise_words(words: np.ndarray, k0: np.uint32, k1: np.uint32, first: int) -> None:
    """``words[j]`` = the hash word of voxel ``first + j`` for the key halves ``k0``, ``k1``
    (``split_key``), in a loop the compiler vectorises 8 lanes wide (with the halves derived in
    here from the 64-bit key, LLVM no longer does). The value, ``NOISE_TABLE[word >> SHIFT]``,
    is looked up where it is used (in the kernel's output loop, not in a row of its own)."""
    base = _U32(_U32(first) * _G)
    for j in range(words.shape[0]):
        x = _U32(base + _U32(_U32(j) * _G))
        words[j] = _lowbias32(_U32(_lowbias32(_U32(x ^ k0)) ^ k1))


@njit(cache=True)
def split_key(key: np.uint64) -> tuple[np.uint32, np.uint32]:
    """The 32-bit halves (low, high) of a 64-bit key."""
    return _U32(key & _LOW32), _U32(key >> _HIGH)


@njit(cache=True, nogil=True)
def fill_normal(out: np.ndarray, key: np.uint64) -> None:
    """The whole field for ``key`` into ``out`` (any shape, C order)."""
    flat = out.reshape(-1)
    words = np.empty(flat.size, np.uint32)
    k0, k1 = split_key(key)
    noise_words(words, k0, k1, 0)
    for j in range(flat.size):
        flat[j] = NOISE_TABLE[words[j] >> SHIFT]


@njit(cache=True, nogil=True)
def add_noise(out: np.ndarray, key: np.uint64, std: float) -> None:
    """``out += std * normal_field`` (used after blur, so the noise itself is not blurred)."""
    oz, oy, ox = out.shape
    words = np.empty(ox, np.uint32)
    k0, k1 = split_key(key)
    for z in range(oz):
        for y in range(oy):
            noise_words(words, k0, k1, (z * oy + y) * ox)
            for x in range(ox):
                out[z, y, x] = out[z, y, x] + std * NOISE_TABLE[words[x] >> SHIFT]
