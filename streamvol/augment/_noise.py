"""Counter-based Gaussian noise: voxel ``i`` of a sample gets a value that depends on
``(noise_seed, i)`` only.

Why counter-based: a sequential generator makes the field depend on the order voxels are visited
(so on the thread count) and costs a pass of its own; a hash of the voxel index can be evaluated
inside the resampling loop, by any thread, on any device, and gives the same field.

The construction (both implementations below follow it bit for bit):

- ``key = mix64(noise_seed)``; the ``c``-th 64-bit word of voxel ``i`` is
  ``mix64(key + (i * 128 + c) * 0x9E3779B97F4A7C15)`` (mod 2**64), where ``mix64`` is the
  splitmix64 finaliser. This is the splitmix64 stream at position ``i * 128 + c``.
- Each word feeds a 256-layer ziggurat (Marsaglia and Tsang; numpy's layout with a 31-bit
  magnitude): low 8 bits the layer, bit 8 the sign, bits 9..39 the magnitude (31 bits, so it
  converts to float through int32, which vectorises on AVX2; 52 bits did not and cost 2x).
  ~99% of voxels return after one word and one table lookup (the fast path is exact integer and
  float64 arithmetic, so identical on every backend); the rest use a second word for the wedge
  or tail test (``exp`` / ``log``) and, if rejected, try words ``c = 3, 4, ...``.

The numba side (``_kernels.normal_at`` / ``noise_row``, in the kernels' module so numba's
cache, which only watches a function's own file, recompiles the kernels when it changes) is what
the CPU kernels call per voxel; ``normal_field_torch``
vectorises the same steps with int64 torch ops (wrapping multiplication, masked logical shifts),
so the GPU backend reproduces the CPU field exactly up to the last bit of ``exp``/``log`` in the
rare slow path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streamvol.augment._kernels import (
    FI,
    GOLDEN,
    INV_R,
    KI,
    MASK64,
    MAX_TRIES,
    MIX1,
    MIX2,
    TAIL_R,
    WI,
    fill_normal,
    noise_key,
)

__all__ = ["noise_key", "normal_field", "normal_field_torch"]


def normal_field(noise_seed: int, shape: Sequence[int]) -> np.ndarray:
    """The standard-normal field (float64, C order) the kernels add for ``noise_seed``."""
    out = np.empty(tuple(int(s) for s in shape), np.float64)
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


def normal_field_torch(seeds, shape: Sequence[int], device=None):
    """``(B, *shape)`` float64 standard normals for int64 ``seeds`` (B,) holding uint64 bits.

    Equal to ``normal_field(seed, shape)`` for each seed (bit for bit on the fast path, which is
    ~99% of voxels; to the last ulp of torch's ``exp``/``log`` elsewhere). Needs float64 on the
    device (CPU and CUDA have it).
    """
    import torch

    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    device = seeds.device
    n = math.prod(int(s) for s in shape)
    b = seeds.shape[0]
    ki = torch.as_tensor(KI.astype(np.int64), device=device)
    wi = torch.as_tensor(WI, device=device)
    fi = torch.as_tensor(FI, device=device)
    golden = _signed(GOLDEN)
    key = _mix64_torch(seeds)
    index = torch.arange(n, dtype=torch.int64, device=device)
    base = (key[:, None] + (index << 7)[None, :] * golden).reshape(-1)
    out = torch.zeros(b * n, dtype=torch.float64, device=device)
    todo = torch.arange(b * n, dtype=torch.int64, device=device)
    c = 1
    for _ in range(MAX_TRIES):
        if todo.numel() == 0:
            break
        words = base[todo]
        h = _mix64_torch(words + _signed((c * GOLDEN) & MASK64))
        layer = h & 0xFF
        rabs = _srl(h, 9) & ((1 << 31) - 1)
        negative = (_srl(h, 8) & 1) == 1
        x = rabs.to(torch.float64) * wi[layer]
        x = torch.where(negative, -x, x)
        done = rabs < ki[layer]
        slow = ~done
        if slow.any():
            bw = _mix64_torch(words[slow] + _signed(((c + 1) * GOLDEN) & MASK64))
            ls, xs, ns = layer[slow], x[slow], negative[slow]
            u1 = (_srl(bw, 32).to(torch.float64) + 0.5) * 2.3283064365386963e-10
            u2 = ((bw & 0xFFFFFFFF).to(torch.float64) + 0.5) * 2.3283064365386963e-10
            xx = -torch.log(u1) * INV_R
            yy = -torch.log(u2)
            tail_ok = (ls == 0) & (yy + yy > xx * xx)
            tail_x = torch.where(ns, -(TAIL_R + xx), TAIL_R + xx)
            u = _srl(bw, 11).to(torch.float64) * 1.1102230246251565e-16
            prev = fi[(ls - 1).clamp(min=0)]
            wedge_ok = (ls != 0) & (fi[ls] + u * (prev - fi[ls]) < torch.exp(-0.5 * xs * xs))
            x[slow] = torch.where(tail_ok, tail_x, xs)
            done[slow] = tail_ok | wedge_ok
        out[todo[done]] = x[done]
        todo = todo[~done]
        c += 2
    return out.reshape(b, *(int(s) for s in shape))
