"""numba kernels: one pass over the output that resamples, normalises, adjusts and adds noise.

Per output row (fixed z, y) the kernel fills small row buffers, each with a plain loop: the input
coordinates, corners and weights (affine in x, plus the elastic displacement); the eight
neighbours of every corner, read as four x-adjacent pairs with one load each (``_load_pair``),
and the nearest mask label (``_gather``: loads only); the trilinear values; the noise hash words
(``noise_words``); and finally the intensity chain and the noise into the float32 output. LLVM
does not vectorise a loop that gathers (it cannot rule out that the gather aliases the store),
so keeping the loads in a loop of their own lets every other loop run 4 or 8 lanes wide: this
split halved the kernel's time, and the pair loads took another quarter off. The augment path
interpolates in float32 (8 lanes, not 4) with fused multiply-adds (``fastmath={"contract"}``
only: no reassociation); the public ``affine_transform`` keeps float64. The output is swept in
bands of ``BAND`` rows over every z, and each row prefetches the block's lines that the same row
``AHEAD`` slices later will read: the cache, not the arithmetic, is what a rotated walk through a
large block waits on. The per-row helpers are inlined by numba (``inline="always"``): a call
passes its arrays with reference counting, which over 4096 rows cost a fifth of the time. A row
that lies wholly inside the stored block skips the bounds tests; boundary rows take a
voxel-at-a-time path. Nothing is allocated per voxel and no Python runs inside.

Boundary: a coordinate outside ``[0, n - 1]`` on any axis reads the raw value ``cval`` (mask:
0), exactly as ``scipy.ndimage.affine_transform(mode="constant")``. Nearest rounds halves up, as
scipy's order 0 does.

Threads: ``_rows`` handles the z range [z0, z1); ``_rows_parallel`` splits z over numba threads.
Every voxel's value depends on its own index only, so the output is the same for any split. The
kernels release the GIL: in a loader worker, the thread through which torch hands finished
batches to the main process then answers at once instead of waiting for the kernel.

The numba half of the counter-based noise (designed in ``_noise``) lives here too: numba's
on-disk cache only watches a function's own file, so code the kernels inline must share it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# output rows per band: the kernel sweeps z for 16 rows at a time, so the block's lines that one
# slice of a band reads are still in L2 when the next slice reads most of them again (a whole
# 64-row slice of a rotated float32 block reads more than L2 holds): 10% faster for float32
BAND = 16
# while resampling a row, the kernel prefetches the block's lines that the same row AHEAD slices
# later will read, at every STEP-th voxel (the four lines of its corner's 2 x 2 (z, y) rows): the
# gathers otherwise wait on L3 or memory, which no hardware prefetcher can predict for a rotated
# walk. 20-30% faster at 96^3 (a 19 MB float32 block), 0-10% at 64^3
AHEAD, STEP = 4, 4

# flags (int64 array)
ORDER, HAS_MASK, HAS_ELASTIC, DO_GAMMA, DO_NOISE = range(5)
# float parameters (float64 array)
OFFSET, SCALE, LO, SPAN, GAMMA, MEAN, CONTRAST, BRIGHTNESS, NOISE_STD, CVAL = range(10)
N_FLAGS, N_FLOATS = 5, 10

# --- counter-based Gaussian noise (the design is in _noise.py's docstring) ----------------------

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
_S15, _S16, _SHIFT = _U32(15), _U32(16), _U32(32 - TABLE_BITS)
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
        flat[j] = NOISE_TABLE[words[j] >> _SHIFT]


@njit(cache=True)
def _elastic_row(
    cz: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    grid: np.ndarray,
    z: int,
    y: int,
    out_shape: tuple[int, int, int],
    line: np.ndarray,
) -> None:
    """Add the displacement (trilinear in the coarse ``grid`` (3, gz, gy, gx), whose control points
    span the output corner to corner) to one row of coordinates."""
    oz, oy, ox = out_shape
    gz, gy, gx = grid.shape[1], grid.shape[2], grid.shape[3]
    tz = z * (gz - 1) / (oz - 1) if oz > 1 else 0.0
    ty = y * (gy - 1) / (oy - 1) if oy > 1 else 0.0
    kz = min(int(tz), gz - 2) if gz > 1 else 0
    ky = min(int(ty), gy - 2) if gy > 1 else 0
    fz, fy = tz - kz, ty - ky
    kz1, ky1 = min(kz + 1, gz - 1), min(ky + 1, gy - 1)
    for a in range(3):
        for k in range(gx):
            top = grid[a, kz, ky, k] * (1.0 - fy) + grid[a, kz, ky1, k] * fy
            bottom = grid[a, kz1, ky, k] * (1.0 - fy) + grid[a, kz1, ky1, k] * fy
            line[a, k] = top * (1.0 - fz) + bottom * fz
    for x in range(ox):
        tx = x * (gx - 1) / (ox - 1) if ox > 1 else 0.0
        kx = min(int(tx), gx - 2) if gx > 1 else 0
        fx = tx - kx
        kx1 = min(kx + 1, gx - 1)
        cz[x] += line[0, kx] * (1.0 - fx) + line[0, kx1] * fx
        cy[x] += line[1, kx] * (1.0 - fx) + line[1, kx1] * fx
        cx[x] += line[2, kx] * (1.0 - fx) + line[2, kx1] * fx


@njit(cache=True)
def _lerp8(
    s: np.ndarray,
    lut: np.ndarray,
    i: int,
    dx: int,
    dy: int,
    dz: int,
    fz: float,
    fy: float,
    fx: float,
) -> float:
    """Trilinear value from the flat block ``s`` at corner ``i``, the upper neighbours at
    ``+dx``, ``+dy``, ``+dz`` (0 at the block's last voxel, whose weight is then 0), float64.
    The boundary rows' path: one voxel at a time."""
    if lut is not None:
        v000, v001 = np.float64(lut[s[i]]), np.float64(lut[s[i + dx]])
        v010, v011 = np.float64(lut[s[i + dy]]), np.float64(lut[s[i + dy + dx]])
        v100, v101 = np.float64(lut[s[i + dz]]), np.float64(lut[s[i + dz + dx]])
        v110, v111 = np.float64(lut[s[i + dz + dy]]), np.float64(lut[s[i + dz + dy + dx]])
    else:
        v000, v001 = np.float64(s[i]), np.float64(s[i + dx])
        v010, v011 = np.float64(s[i + dy]), np.float64(s[i + dy + dx])
        v100, v101 = np.float64(s[i + dz]), np.float64(s[i + dz + dx])
        v110, v111 = np.float64(s[i + dz + dy]), np.float64(s[i + dz + dy + dx])
    a = v000 + (v001 - v000) * fx
    b = v010 + (v011 - v010) * fx
    c = v100 + (v101 - v100) * fx
    d = v110 + (v111 - v110) * fx
    a = a + (b - a) * fy
    c = c + (d - c) * fy
    return a + (c - a) * fz


@intrinsic
def _load_pair(typingctx, array, index):
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
def _prefetch(typingctx, array, index):
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


def _pair_rows(s: np.ndarray, n: int) -> np.ndarray:
    """Scratch for ``_load_pair``'s results: (4, n) unsigned integers of twice ``s``'s width."""
    raise NotImplementedError("numba only")


@overload(_pair_rows)
def _pair_rows_numba(s, n):
    dtype = {8: np.uint16, 16: np.uint32, 32: np.uint64}[s.dtype.bitwidth]
    return lambda s, n: np.empty((4, n), dtype)


def _values_rows(v: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """``v`` itself, or with a ``lut`` a buffer for the values it maps ``v`` to."""
    raise NotImplementedError("numba only")


@overload(_values_rows)
def _values_rows_numba(v, lut):
    if lut is None or isinstance(lut, types.NoneType):
        return lambda v, lut: v
    return lambda v, lut: np.empty(v.shape, lut.dtype)


def _like(array: np.ndarray, value: float) -> float:
    """``value`` as ``array``'s float type (the precision the caller's ``work`` rows chose)."""
    raise NotImplementedError("numba only")


@overload(_like)
def _like_numba(array, value):
    if array.dtype == types.float32:
        return lambda array, value: np.float32(value)
    return lambda array, value: np.float64(value)


@njit(cache=True, inline="always")
def _nearest(pz: float, py: float, px: float, sz: np.int32, sy: np.int32) -> np.int32:
    """Flat index of the voxel nearest a point inside the block, halves up as scipy's order 0:
    floor + (fraction >= 1/2) per axis, exact (unlike int(c + 0.5), which rounds c + 0.5 first),
    from the float64 coordinates whatever the interpolation's precision."""
    iz, iy, ix = np.int32(pz), np.int32(py), np.int32(px)
    return (
        (iz + np.int32(pz - iz >= 0.5)) * sz
        + (iy + np.int32(py - iy >= 0.5)) * sy
        + ix
        + np.int32(px - ix >= 0.5)
    )


@njit(cache=True, inline="always")
def _gather(
    s: np.ndarray,
    ms: np.ndarray,
    corner: np.ndarray,
    near: np.ndarray,
    sy: int,
    sz: int,
    pairs: np.ndarray,
    mrow: np.ndarray,
    has_mask: bool,
) -> None:
    """The eight neighbours of each corner, as four x-adjacent pairs, into ``pairs`` (4, n),
    and the mask label at each ``near`` index into ``mrow``. Loads only, so the arithmetic
    around it vectorises (a loop that gathers keeps LLVM from vectorising it); unsigned
    indices, so no negative-index wraparound per load."""
    uy, uz = np.uint64(sy), np.uint64(sz)
    for x in range(corner.shape[0]):
        i = np.uint64(corner[x])
        j = i + uz
        pairs[0, x] = _load_pair(s, i)
        pairs[1, x] = _load_pair(s, i + uy)
        pairs[2, x] = _load_pair(s, j)
        pairs[3, x] = _load_pair(s, j + uy)
        if has_mask:
            mrow[x] = ms[np.uint64(near[x])]


@njit(cache=True, inline="always")
def _finish_row(
    raw: np.ndarray,
    out: np.ndarray,
    words: np.ndarray,
    first: int,
    k0: np.uint32,
    k1: np.uint32,
    fp: np.ndarray,
    do_gamma: bool,
    do_noise: bool,
) -> None:
    """One row's intensity chain and noise, from the raw values ``raw`` into ``out`` (float32),
    in ``raw``'s precision."""
    offset, scale = fp[OFFSET], fp[SCALE]
    lo, span, gamma = fp[LO], fp[SPAN], fp[GAMMA]
    mean, contrast, brightness, std = fp[MEAN], fp[CONTRAST], fp[BRIGHTNESS], fp[NOISE_STD]
    if do_noise:
        noise_words(words, k0, k1, first)
    if do_gamma:
        for x in range(out.shape[0]):
            v = (raw[x] - offset) * scale
            r = min(max((v - lo) / span, 0.0), 1.0)
            v = r**gamma * span + lo
            raw[x] = (v - mean) * contrast + mean + brightness
        g, b = _like(raw, 1.0), _like(raw, 0.0)
    else:  # without gamma, normalise + contrast + brightness is one affine map of the raw value
        g = _like(raw, scale * contrast)
        b = _like(raw, (-offset * scale - mean) * contrast + mean + brightness)
    if do_noise:
        std = _like(raw, std)
        for x in range(out.shape[0]):
            out[x] = raw[x] * g + b + std * NOISE_TABLE[words[x] >> _SHIFT]
    else:
        for x in range(out.shape[0]):
            out[x] = raw[x] * g + b


@njit(cache=True, nogil=True)
def copy_rows(
    view: np.ndarray,
    lut: np.ndarray,
    out: np.ndarray,
    fp: np.ndarray,
    flags: np.ndarray,
    key: np.uint64,
) -> None:
    """``out`` from ``view``, a (strided) view of the stored block that already is the output's
    geometry (flips and 90-degree turns land on stored voxels): the intensity chain and the
    noise of ``_rows``, without resampling."""
    oz, oy, ox = out.shape
    raw = np.empty(ox)
    words = np.empty(ox, np.uint32)
    k0, k1 = split_key(key)
    do_gamma, do_noise = flags[DO_GAMMA] != 0, flags[DO_NOISE] != 0
    for z in range(oz):
        for y in range(oy):
            row = view[z, y]
            if lut is not None:
                for x in range(ox):
                    raw[x] = lut[row[x]]
            else:
                for x in range(ox):
                    raw[x] = row[x]
            _finish_row(raw, out[z, y], words, (z * oy + y) * ox, k0, k1, fp, do_gamma, do_noise)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _rows(
    src: np.ndarray,
    lut: np.ndarray,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    fp: np.ndarray,
    flags: np.ndarray,
    key: np.uint64,
    precision: np.ndarray,
    z0: int,
    z1: int,
) -> None:
    """Fill ``out[z0:z1]`` (and ``mout``) from ``src`` through the 3x4 matrix ``m``. ``lut`` is
    None, or a table the raw values index (float16 read as its uint16 bits): a None argument
    is pruned at compile time, so each dtype gets a kernel without the test. ``precision``'s
    dtype (float32 or float64) is the interpolation's and intensity chain's: coordinates, and
    so which voxels are read, are float64 either way."""
    nz, ny, nx = src.shape
    oz, oy, ox = out.shape
    s = src.reshape(-1)
    ms = msrc.reshape(-1)
    sy, sz = nx, ny * nx
    zmax, ymax, xmax = nz - 1.0, ny - 1.0, nx - 1.0
    order = flags[ORDER]
    has_mask = flags[HAS_MASK] != 0
    has_elastic = flags[HAS_ELASTIC] != 0
    do_gamma = flags[DO_GAMMA] != 0
    do_noise = flags[DO_NOISE] != 0
    cval = fp[CVAL]
    cz = np.empty(ox)
    cy = np.empty(ox)
    cx = np.empty(ox)
    work = np.empty((4, ox), precision.dtype)
    wz, wy, wx, raw = work[0], work[1], work[2], work[3]
    pairs = _pair_rows(s, ox)
    v = pairs.view(s.dtype)  # (4, 2 * ox): the corner's value, then its +x neighbour
    vals = _values_rows(v, lut)
    corner = np.empty(ox, np.int32)
    near = np.empty(ox, np.int32)
    sy32, sz32 = np.int32(sy), np.int32(sz)
    last = s.size - 1 - sz - sy  # the last corner whose four prefetched lines are in the block
    words = np.empty(ox, np.uint32)
    k0, k1 = split_key(key)
    line = np.empty((3, grid.shape[3]))
    # the matrix in scalars: LLVM cannot tell that the row stores do not alias it
    m00, m01, m02, m03 = m[0, 0], m[0, 1], m[0, 2], m[0, 3]
    m10, m11, m12, m13 = m[1, 0], m[1, 1], m[1, 2], m[1, 3]
    m20, m21, m22, m23 = m[2, 0], m[2, 1], m[2, 2], m[2, 3]
    for band in range(0, oy, BAND):  # rows band..band + BAND of every z, then the next band
        for z in range(z0, z1):
            for y in range(band, min(band + BAND, oy)):
                bz = m00 * z + m01 * y + m03
                by = m10 * z + m11 * y + m13
                bx = m20 * z + m21 * y + m23
                # a fast row lies strictly inside [0, n - 1): every +1 neighbour exists
                fast = True
                if has_elastic:
                    for x in range(ox):
                        cz[x] = bz + m02 * x
                        cy[x] = by + m12 * x
                        cx[x] = bx + m22 * x
                    _elastic_row(cz, cy, cx, grid, z, y, (oz, oy, ox), line)
                    for x in range(ox):
                        if not (
                            0.0 <= cz[x] < zmax and 0.0 <= cy[x] < ymax and 0.0 <= cx[x] < xmax
                        ):
                            fast = False
                            break
                else:  # affine in x: the row is inside iff both ends are
                    e = ox - 1
                    ez, ey, ex = bz + m02 * e, by + m12 * e, bx + m22 * e
                    fast = (
                        0.0 <= bz < zmax
                        and 0.0 <= by < ymax
                        and 0.0 <= bx < xmax
                        and 0.0 <= ez < zmax
                        and 0.0 <= ey < ymax
                        and 0.0 <= ex < xmax
                    )
                    if not (fast and order == 1):
                        for x in range(ox):
                            cz[x] = bz + m02 * x
                            cy[x] = by + m12 * x
                            cx[x] = bx + m22 * x
                if fast and order == 1:
                    if has_elastic:
                        for x in range(ox):
                            # int32: the conversions vectorise (AVX2 has no float64 -> int64)
                            iz, iy, ix = np.int32(cz[x]), np.int32(cy[x]), np.int32(cx[x])
                            wz[x] = _like(wz, cz[x] - iz)
                            wy[x] = _like(wy, cy[x] - iy)
                            wx[x] = _like(wx, cx[x] - ix)
                            corner[x] = iz * sz32 + iy * sy32 + ix
                        if has_mask:
                            for x in range(ox):
                                near[x] = _nearest(cz[x], cy[x], cx[x], sz32, sy32)
                    else:  # straight from the row's start: no coordinate rows to store and reload
                        for x in range(ox):
                            pz, py, px = bz + m02 * x, by + m12 * x, bx + m22 * x
                            iz, iy, ix = np.int32(pz), np.int32(py), np.int32(px)
                            wz[x], wy[x], wx[x] = (
                                _like(wz, pz - iz),
                                _like(wy, py - iy),
                                _like(wx, px - ix),
                            )
                            corner[x] = iz * sz32 + iy * sy32 + ix
                        if has_mask:
                            for x in range(ox):
                                near[x] = _nearest(
                                    bz + m02 * x, by + m12 * x, bx + m22 * x, sz32, sy32
                                )
                    mrow = mout[z, y] if has_mask else mout[0, 0]
                    if z + AHEAD < z1 and last > 0:
                        qz, qy, qx = bz + m00 * AHEAD, by + m10 * AHEAD, bx + m20 * AHEAD
                        for x in range(0, ox, STEP):
                            pz, py, px = qz + m02 * x, qy + m12 * x, qx + m22 * x
                            i = np.int64(pz) * sz + np.int64(py) * sy + np.int64(px)
                            i = min(max(i, 0), last)
                            _prefetch(s, i)
                            _prefetch(s, i + sy)
                            _prefetch(s, i + sz)
                            _prefetch(s, i + sz + sy)
                    _gather(s, ms, corner, near, sy, sz, pairs, mrow, has_mask)
                    if lut is not None:  # float16 bits -> values, before the vectorised loop
                        for k in range(4):
                            for e in range(2 * ox):
                                vals[k, e] = lut[v[k, e]]
                    for x in range(ox):
                        e, f = 2 * x, 2 * x + 1
                        v000, v001 = _like(raw, vals[0, e]), _like(raw, vals[0, f])
                        v010, v011 = _like(raw, vals[1, e]), _like(raw, vals[1, f])
                        v100, v101 = _like(raw, vals[2, e]), _like(raw, vals[2, f])
                        v110, v111 = _like(raw, vals[3, e]), _like(raw, vals[3, f])
                        a = v000 + (v001 - v000) * wx[x]
                        b = v010 + (v011 - v010) * wx[x]
                        c = v100 + (v101 - v100) * wx[x]
                        d = v110 + (v111 - v110) * wx[x]
                        a = a + (b - a) * wy[x]
                        c = c + (d - c) * wy[x]
                        raw[x] = a + (c - a) * wz[x]
                else:
                    for x in range(ox):
                        if not (
                            0.0 <= cz[x] <= zmax and 0.0 <= cy[x] <= ymax and 0.0 <= cx[x] <= xmax
                        ):
                            raw[x] = cval
                        elif order == 1:
                            iz, iy, ix = int(cz[x]), int(cy[x]), int(cx[x])
                            # at an axis's last voxel the weight is 0: the neighbour is itself
                            dz = sz if iz < nz - 1 else 0
                            dy = sy if iy < ny - 1 else 0
                            dx = 1 if ix < nx - 1 else 0
                            i = iz * sz + iy * sy + ix
                            raw[x] = _lerp8(
                                s, lut, i, dx, dy, dz, cz[x] - iz, cy[x] - iy, cx[x] - ix
                            )
                        else:
                            i = _nearest(cz[x], cy[x], cx[x], sz32, sy32)
                            raw[x] = lut[s[i]] if lut is not None else s[i]
                    if has_mask:
                        for x in range(ox):
                            if (
                                0.0 <= cz[x] <= zmax
                                and 0.0 <= cy[x] <= ymax
                                and 0.0 <= cx[x] <= xmax
                            ):
                                i = _nearest(cz[x], cy[x], cx[x], sz32, sy32)
                                mout[z, y, x] = ms[i]
                            else:
                                mout[z, y, x] = 0
                _finish_row(
                    raw, out[z, y], words, (z * oy + y) * ox, k0, k1, fp, do_gamma, do_noise
                )


@njit(cache=True, nogil=True, parallel=True)
def _rows_parallel(
    src: np.ndarray,
    lut: np.ndarray,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    fp: np.ndarray,
    flags: np.ndarray,
    key: np.uint64,
    precision: np.ndarray,
    chunks: int,
) -> None:
    oz = out.shape[0]
    for c in prange(chunks):
        _rows(
            src,
            lut,
            msrc,
            out,
            mout,
            m,
            grid,
            fp,
            flags,
            key,
            precision,
            c * oz // chunks,
            (c + 1) * oz // chunks,
        )


@njit(cache=True, nogil=True)
def touch(block: np.ndarray) -> int:
    """Read one byte of every cache line of a C-contiguous ``block``, in memory order: a pass
    the hardware prefetcher streams, after which the resampling finds the block in the caches
    (on a block fresh from the page cache, 15% faster including the pass)."""
    flat = block.reshape(-1).view(np.uint8)
    seen = 0
    for i in range(0, flat.size, 64):
        seen ^= flat[i]
    return seen


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
                out[z, y, x] = out[z, y, x] + std * NOISE_TABLE[words[x] >> _SHIFT]


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


_PRECISION = {np.dtype(t): np.zeros(0, t) for t in (np.float32, np.float64)}


def resample(
    src: np.ndarray,
    lut: np.ndarray | None,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    fp: np.ndarray,
    flags: np.ndarray,
    key: int,
    threads: int = 1,
    precision: type = np.float64,
) -> None:
    """Run the fused kernel serially (``threads=1``) or split over numba threads, interpolating
    in ``precision`` (np.float32 or np.float64)."""
    ukey = np.uint64(key)
    like = _PRECISION[np.dtype(precision)]
    if threads <= 1:
        _rows(src, lut, msrc, out, mout, m, grid, fp, flags, ukey, like, 0, out.shape[0])
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        chunks = min(out.shape[0], 4 * threads)
        _rows_parallel(src, lut, msrc, out, mout, m, grid, fp, flags, ukey, like, chunks)
    finally:
        numba.set_num_threads(before)
