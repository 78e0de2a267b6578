"""numba extensions the kernels compile in: two LLVM intrinsics (one load for two x-adjacent
voxels, a prefetch hint) and three helpers whose code depends on an argument's type (overloads,
resolved at compile time, so each dtype's kernel carries no runtime test).

Everything here is compiled into the kernels that call it (``chain``, ``resample``), which
record this file's hash for numba's cache (see the package docstring).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def load_pair(typingctx, array, index):
    """``array[index]`` and ``array[index + 1]`` as one unsigned integer of twice the item's
    width: a single unaligned load in place of two (the items stay in memory order when the
    integer is stored back). ``index + 1`` must be inside the array."""
    bits = array.dtype.bitwidth * 2
    sig = getattr(types, f"uint{bits}")(array, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(bits).as_pointer())
        return builder.load(pointer, align=1)

    return sig, codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line of ``array[index]`` into its caches (``llvm.prefetch``:
    a hint, no load, no fault); ``index`` must be inside the array."""
    sig = types.void(array, index)
    byte = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), byte)
        hint = builder.module.declare_intrinsic(
            "llvm.prefetch", (), ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32])
        )
        # read, keep in all levels, data cache
        builder.call(hint, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


def pair_rows(s: np.ndarray, n: int) -> np.ndarray:
    """Scratch for ``load_pair``'s results: (4, n) unsigned integers of twice ``s``'s width."""
    raise NotImplementedError("numba only")


@overload(pair_rows)
def _pair_rows_numba(s, n):
    dtype = {8: np.uint16, 16: np.uint32, 32: np.uint64}[s.dtype.bitwidth]
    return lambda s, n: np.empty((4, n), dtype)


def values_rows(v: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """``v`` itself, or with a ``lut`` a buffer for the values it maps ``v`` to."""
    raise NotImplementedError("numba only")


@overload(values_rows)
def _values_rows_numba(v, lut):
    if lut is None or isinstance(lut, types.NoneType):
        return lambda v, lut: v
    return lambda v, lut: np.empty(v.shape, lut.dtype)


def like(array: np.ndarray, value: float) -> float:
    """``value`` as ``array``'s float type (the precision the caller's ``work`` rows chose)."""
    raise NotImplementedError("numba only")


@overload(like)
def _like_numba(array, value):
    if array.dtype == types.float32:
        return lambda array, value: np.float32(value)
    return lambda array, value: np.float64(value)
