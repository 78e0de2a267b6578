"""Counter-based Gaussian noise: voxel ``i`` of a sample gets a value that depends on
``(noise_seed, i)`` only.

Why counter-based: a sequential generator makes the field depend on the order voxels are visited
(so on the thread count) and costs a pass of its own; a hash of the voxel index can be evaluated
inside the resampling loop, by any thread, on any device, and gives the same field.

The construction (both implementations below follow it bit for bit):

- ``key = splitmix64_finaliser(noise_seed)``, split into 32-bit halves ``k0`` (low), ``k1``;
- voxel ``i``'s word is ``h(h((i * 0x9E3779B9 mod 2**32) ^ k0) ^ k1)``, with ``h`` Wellons'
  ``lowbias32`` integer hash (two multiplies, three xor-shifts, all 32-bit: eight voxels per
  AVX2 instruction, about 0.5 ns a voxel);
- its top 16 bits index a table of the ``2**16`` equiprobable quantiles of the standard normal
  (``ndtri((j + 1/2) / 2**16)``, rescaled to unit variance, float32; 256 KiB).

So each voxel's value is one of 65,536 equally likely levels whose distribution is the normal's
to within a quantile step (the largest is 4.32; a true normal exceeds that once in 65,000 draws),
with mean 0 and variance 1 exactly. Every step is integer arithmetic or a table lookup, so the
torch twin is exact on every device. (A 64-bit ziggurat, the first design, cost 3x as much: AVX2
has no 64-bit multiply, and its rejection path needed ``exp``/``log`` that no two backends round
alike.)

The numba side (``_kernels.noise_words`` and the table, in the kernels' module so numba's cache,
which only watches a function's own file, recompiles the kernels when it changes) is what the
CPU kernels use per row; ``normal_field_torch`` evaluates the same words with int64 torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streamvol.augment._kernels import (
    GOLDEN32,
    LOWBIAS,
    MASK32,
    MIX1,
    MIX2,
    NOISE_TABLE,
    TABLE_BITS,
    fill_normal,
    noise_key,
)

__all__ = ["noise_key", "normal_field", "normal_field_torch"]


def normal_field(noise_seed: int, shape: Sequence[int]) -> np.ndarray:
    """The standard-normal field (float32, C order) the kernels add for ``noise_seed``."""
    out = np.empty(tuple(int(s) for s in shape), np.float32)
    fill_normal(out, np.uint64(noise_key(noise_seed)))
    return out


# --- torch: the same words with int64 tensors ---------------------------------------------------


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _srl(x, k: int):
    """Logical right shift of int64 tensors (torch's ``>>`` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64_torch(x):
    x = (x ^ _srl(x, 30)) * _signed(MIX1)
    x = (x ^ _srl(x, 27)) * _signed(MIX2)
    return x ^ _srl(x, 31)


def _lowbias32_torch(x):
    """``lowbias32`` on int64 tensors holding 32-bit values (products are masked back)."""
    x = x ^ (x >> 16)
    x = (x * LOWBIAS[0]) & MASK32
    x = x ^ (x >> 15)
    x = (x * LOWBIAS[1]) & MASK32
    return x ^ (x >> 16)


def normal_field_torch(seeds, shape: Sequence[int], device=None):
    """``(B, *shape)`` float32 standard normals for int64 ``seeds`` (B,) holding uint64 bits:
    ``normal_field(seed, shape)`` for each seed, bit for bit, on any device."""
    import torch

    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    device = seeds.device
    n = math.prod(int(s) for s in shape)
    key = _mix64_torch(seeds)
    k0 = (key & MASK32)[:, None]
    k1 = _srl(key, 32)[:, None]
    index = torch.arange(n, dtype=torch.int64, device=device)
    words = (index * GOLDEN32) & MASK32
    words = _lowbias32_torch(_lowbias32_torch(words[None, :] ^ k0) ^ k1)
    table = torch.as_tensor(NOISE_TABLE, device=device)
    return table[words >> (32 - TABLE_BITS)].reshape(len(seeds), *(int(s) for s in shape))
