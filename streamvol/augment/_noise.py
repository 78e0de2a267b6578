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

The numba side (``_kernels.noise``: ``noise_words`` and the table; the kernels that inline it
keep numba's cache current as the ``_kernels`` package docstring says) is what the CPU kernels
use per row; ``normal_field_torch`` evaluates the same words with int64 torch ops,
or on CUDA with one fused elementwise kernel in uint32 (torch's jiterator).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from streamvol.augment._kernels.noise import (
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

__all__ = ["noise_key", "noise_path", "normal_field", "normal_field_torch"]


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


# The words' top bits on CUDA in one elementwise kernel (jiterator: compiled by NVRTC on first
# use, cached): the eager int64 chain below makes ~22 passes of 16 bytes a voxel over (B, n)
# tensors, far more memory traffic than the resampling itself. Same construction, in uint32.
_LEVEL_CODE = f"""
template <typename T> T streamvol_noise_level(T index, T k0, T k1) {{
  unsigned int x = static_cast<unsigned int>(index) * {GOLDEN32:#x}u;
  x ^= static_cast<unsigned int>(k0);
  x ^= x >> 16; x *= {LOWBIAS[0]:#x}u; x ^= x >> 15; x *= {LOWBIAS[1]:#x}u; x ^= x >> 16;
  x ^= static_cast<unsigned int>(k1);
  x ^= x >> 16; x *= {LOWBIAS[0]:#x}u; x ^= x >> 15; x *= {LOWBIAS[1]:#x}u; x ^= x >> 16;
  return static_cast<T>(x >> {32 - TABLE_BITS});
}}
"""
# what the fused kernel did on this process's first CUDA call: None (not tried), True, or why not
_FUSED: dict[str, object] = {}


def _as_int32(x):
    """int64 tensors holding 32-bit values -> int32 tensors with the same bits."""
    import torch

    return (x - ((x >> 31) << 32)).to(torch.int32)


_TABLES: dict[object, object] = {}


def _table_on(device):
    """``NOISE_TABLE`` as a tensor on ``device``, copied there once."""
    import torch

    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = torch.as_tensor(NOISE_TABLE, device=device)
    return table


def _levels_fused(index, k0, k1):
    """Table indices (B, n) int32 from the jiterator kernel (CUDA only)."""
    fn = _FUSED.get("fn")
    if fn is None:
        from torch.cuda.jiterator import _create_jit_fn

        fn = _FUSED["fn"] = _create_jit_fn(_LEVEL_CODE)
    return fn(_as_int32(index)[None, :], _as_int32(k0), _as_int32(k1))


def _levels_eager(index, k0, k1):
    """Table indices (B, n) int64 with plain torch integer ops (any device)."""
    words = (index * GOLDEN32) & MASK32
    words = _lowbias32_torch(_lowbias32_torch(words[None, :] ^ k0) ^ k1)
    return words >> (32 - TABLE_BITS)


def noise_path(device) -> str:
    """Which noise path ``normal_field_torch`` takes on ``device``: "fused" (the CUDA kernel),
    "eager (...why...)" when it fell back, or "eager" off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return "eager"
    state = _FUSED.get("ok")
    return "fused" if state in (None, True) else f"eager ({state})"


def normal_field_torch(seeds, shape: Sequence[int], device=None, *, fused: bool | None = None):
    """``(B, *shape)`` float32 standard normals for int64 ``seeds`` (B,) holding uint64 bits:
    ``normal_field(seed, shape)`` for each seed, bit for bit, on any device.

    On CUDA the hash runs as one fused kernel (``fused=None``: when it compiles; a failure warns
    once and falls back to the torch ops); ``fused=False`` forces the torch ops, ``fused=True``
    the kernel (errors raised)."""
    import torch

    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    device = seeds.device
    n = math.prod(int(s) for s in shape)
    key = _mix64_torch(seeds)
    k0 = (key & MASK32)[:, None]
    k1 = _srl(key, 32)[:, None]
    index = torch.arange(n, dtype=torch.int64, device=device)
    levels = None
    use = device.type == "cuda" if fused is None else fused
    if use and (fused or _FUSED.get("ok") in (None, True)):
        try:
            levels = _levels_fused(index, k0, k1)
            _FUSED["ok"] = True
        except Exception as err:  # NVRTC missing, jiterator changed: the torch ops still work
            if fused:
                raise
            _FUSED["ok"] = f"{type(err).__name__}: {err}"[:200]
            warnings.warn(
                f"fused CUDA noise kernel unavailable, using torch ops: {_FUSED['ok']}",
                RuntimeWarning,
                stacklevel=2,
            )
    if levels is None:
        levels = _levels_eager(index, k0, k1)
    values = _table_on(device).index_select(0, levels.reshape(-1))
    return values.reshape(len(seeds), *(int(s) for s in shape))
