"""The fused pass: one sweep over the output that resamples, then runs the intensity chain and
adds noise (``chain.finish_row``), row by row.

Per output row (fixed z, y) the kernel fills small row buffers, each with a plain loop: the input
coordinates, corners and weights (affine in x, plus the elastic displacement); the eight
neighbours of every corner, read as four x-adjacent pairs with one load each (``load_pair``),
and the nearest mask label (``_gather``: loads only); the trilinear values; then the chain and
the noise into the float32 output. LLVM does not vectorise a loop that gathers (it cannot rule
out that the gather aliases the store), so keeping the loads in a loop of their own lets every
other loop run 4 or 8 lanes wide: this split halved the kernel's time, and the pair loads took
another quarter off. The augment path interpolates in float32 (8 lanes, not 4) with fused
multiply-adds (``fastmath={"contract"}`` only: no reassociation); the public
``affine_transform`` keeps float64. The output is swept in bands of ``BAND`` rows over every z,
and each row prefetches the block's lines that the same row ``AHEAD`` slices later will read:
the cache, not the arithmetic, is what a rotated walk through a large block waits on. The
per-row helpers are inlined by numba (``inline="always"``): a call passes its arrays with
reference counting, which over 4096 rows cost a fifth of the time (an inlined helper still
costs a little per array it takes: the trilinear loops stay in ``_rows``). A row that lies
wholly inside the stored block skips the bounds tests; boundary rows take a voxel-at-a-time
path (``_boundary_row``). Trilinear interpolation is written once, ``_lerp``, for both. Nothing
is allocated per voxel and no Python runs inside.

Boundary: a coordinate outside ``[0, n - 1]`` on any axis reads the raw value ``cval`` (mask:
0), exactly as ``scipy.ndimage.affine_transform(mode="constant")``. Nearest rounds halves up, as
scipy's order 0 does.

Threads: ``_rows`` handles the z range [z0, z1); ``_rows_parallel`` splits z over numba threads.
Every voxel's value depends on its own index only, so the output is the same for any split. The
kernels release the GIL: in a loader worker, the thread through which torch hands finished
batches to the main process then answers at once instead of waiting for the kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamvol.augment._kernels._cache import cache_if_unchanged
from streamvol.augment._kernels.chain import finish_row
from streamvol.augment._kernels.extend import like, load_pair, pair_rows, prefetch, values_rows
from streamvol.augment._kernels.noise import split_key
from streamvol.augment._kernels.params import Intensity, Sampling

# output rows per band: the kernel sweeps z for 16 rows at a time, so the block's lines that one
# slice of a band reads are still in L2 when the next slice reads most of them again (a whole
# 64-row slice of a rotated float32 block reads more than L2 holds): 10% faster for float32
BAND = 16
# while resampling a row, the kernel prefetches the block's lines that the same row AHEAD slices
# later will read, at every STEP-th voxel (the four lines of its corner's 2 x 2 (z, y) rows): the
# gathers otherwise wait on L3 or memory, which no hardware prefetcher can predict for a rotated
# walk. 20-30% faster at 96^3 (a 19 MB float32 block), 0-10% at 64^3
AHEAD, STEP = 4, 4

# the files whose code the kernels below compile in, and their sha256 (``_cache.sources_sha256``)
INLINED = ("chain.py", "extend.py", "noise.py", "params.py")
INLINED_SHA256 = "16dec9f8cf5156e484b9f797d3286f9ea1b18a188f4b94e18eb31ba085701e12"


@njit(cache=True, inline="always")
def _lerp(v000, v001, v010, v011, v100, v101, v110, v111, fz, fy, fx):
    """Trilinear interpolation of the corners ``v<z><y><x>`` with the upper corners' weights
    ``fz``, ``fy``, ``fx``: along x, then y, then z, in the arguments' precision. The one
    formula both paths use (the fast rows in float32 or float64, the boundary in float64)."""
    a = v000 + (v001 - v000) * fx
    b = v010 + (v011 - v010) * fx
    c = v100 + (v101 - v100) * fx
    d = v110 + (v111 - v110) * fx
    a = a + (b - a) * fy
    c = c + (d - c) * fy
    return a + (c - a) * fz


@njit(cache=True, inline="always")
def _read(s: np.ndarray, lut: np.ndarray, i: int) -> float:
    """The value of flat voxel ``i``, through ``lut`` when there is one, as float64."""
    return np.float64(lut[s[i]]) if lut is not None else np.float64(s[i])


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
    return _lerp(
        _read(s, lut, i),
        _read(s, lut, i + dx),
        _read(s, lut, i + dy),
        _read(s, lut, i + dy + dx),
        _read(s, lut, i + dz),
        _read(s, lut, i + dz + dx),
        _read(s, lut, i + dz + dy),
        _read(s, lut, i + dz + dy + dx),
        fz,
        fy,
        fx,
    )


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


# --- the coordinates of one row -----------------------------------------------------------------


@njit(cache=True, inline="always")
def _affine_coords(cz, cy, cx, start, col) -> None:
    """The row's input coordinates from its ``start`` (z, y, x) and the matrix's x column
    ``col``."""
    bz, by, bx = start
    m02, m12, m22 = col
    for x in range(cz.shape[0]):
        cz[x] = bz + m02 * x
        cy[x] = by + m12 * x
        cx[x] = bx + m22 * x


@njit(cache=True, inline="always")
def _all_inside(cz, cy, cx, zmax: float, ymax: float, xmax: float) -> bool:
    """Whether every coordinate lies in ``[0, n - 1)`` on each axis: every +1 neighbour exists."""
    for x in range(cz.shape[0]):
        if not (0.0 <= cz[x] < zmax and 0.0 <= cy[x] < ymax and 0.0 <= cx[x] < xmax):
            return False
    return True


@njit(cache=True, inline="always")
def _ends_inside(start, col, e: int, zmax: float, ymax: float, xmax: float) -> bool:
    """``_all_inside`` for a row affine in x (no elastic displacement): both ends suffice."""
    bz, by, bx = start
    m02, m12, m22 = col
    ez, ey, ex = bz + m02 * e, by + m12 * e, bx + m22 * e
    return (
        0.0 <= bz < zmax
        and 0.0 <= by < ymax
        and 0.0 <= bx < xmax
        and 0.0 <= ez < zmax
        and 0.0 <= ey < ymax
        and 0.0 <= ex < xmax
    )


# --- a row inside the block: vectorised loops around one loop of loads --------------------------


@njit(cache=True, inline="always")
def _corners(cz, cy, cx, wz, wy, wx, corner, near, sz32, sy32, has_mask: bool) -> None:
    """Each voxel's lower corner (flat index), its weights in ``wz``'s precision, and with a
    mask the nearest voxel, from coordinate rows (the elastic path)."""
    for x in range(corner.shape[0]):
        # int32: the conversions vectorise (AVX2 has no float64 -> int64)
        iz, iy, ix = np.int32(cz[x]), np.int32(cy[x]), np.int32(cx[x])
        wz[x] = like(wz, cz[x] - iz)
        wy[x] = like(wy, cy[x] - iy)
        wx[x] = like(wx, cx[x] - ix)
        corner[x] = iz * sz32 + iy * sy32 + ix
    if has_mask:
        for x in range(corner.shape[0]):
            near[x] = _nearest(cz[x], cy[x], cx[x], sz32, sy32)


@njit(cache=True, inline="always")
def _affine_corners(start, col, wz, wy, wx, corner, near, sz32, sy32, has_mask: bool) -> None:
    """``_corners`` straight from the row's start: no coordinate rows to store and reload."""
    bz, by, bx = start
    m02, m12, m22 = col
    for x in range(corner.shape[0]):
        pz, py, px = bz + m02 * x, by + m12 * x, bx + m22 * x
        iz, iy, ix = np.int32(pz), np.int32(py), np.int32(px)
        wz[x], wy[x], wx[x] = like(wz, pz - iz), like(wy, py - iy), like(wx, px - ix)
        corner[x] = iz * sz32 + iy * sy32 + ix
    if has_mask:
        for x in range(corner.shape[0]):
            near[x] = _nearest(bz + m02 * x, by + m12 * x, bx + m22 * x, sz32, sy32)


@njit(cache=True, inline="always")
def _prefetch_row(s, start, col, n: int, sz: int, sy: int, last: int) -> None:
    """Prefetch the block's lines that a row from ``start`` will read: the 2 x 2 (z, y) rows of
    every ``STEP``-th voxel's corner, clamped to corners up to ``last``."""
    qz, qy, qx = start
    m02, m12, m22 = col
    for x in range(0, n, STEP):
        pz, py, px = qz + m02 * x, qy + m12 * x, qx + m22 * x
        i = np.int64(pz) * sz + np.int64(py) * sy + np.int64(px)
        i = min(max(i, 0), last)
        prefetch(s, i)
        prefetch(s, i + sy)
        prefetch(s, i + sz)
        prefetch(s, i + sz + sy)


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
        pairs[0, x] = load_pair(s, i)
        pairs[1, x] = load_pair(s, i + uy)
        pairs[2, x] = load_pair(s, j)
        pairs[3, x] = load_pair(s, j + uy)
        if has_mask:
            mrow[x] = ms[np.uint64(near[x])]


# --- a row that touches the boundary: one voxel at a time ----------------------------------------


@njit(cache=True, inline="always")
def _boundary_row(s, lut, ms, shape, cz, cy, cx, raw, mrow, p: Sampling) -> None:
    """Raw values (and with a mask, labels) of a row whose coordinates ``cz``, ``cy``, ``cx``
    may leave the block ``shape``: ``cval`` (label 0) outside ``[0, n - 1]``, else trilinear
    (clamped at the last voxel, where the upper weight is 0) or nearest."""
    nz, ny, nx = shape
    sy, sz = nx, ny * nx
    sz32, sy32 = np.int32(sz), np.int32(sy)
    zmax, ymax, xmax = nz - 1.0, ny - 1.0, nx - 1.0
    for x in range(raw.shape[0]):
        if not (0.0 <= cz[x] <= zmax and 0.0 <= cy[x] <= ymax and 0.0 <= cx[x] <= xmax):
            raw[x] = p.cval
        elif p.order == 1:
            iz, iy, ix = int(cz[x]), int(cy[x]), int(cx[x])
            # at an axis's last voxel the weight is 0: the neighbour is itself
            dz = sz if iz < nz - 1 else 0
            dy = sy if iy < ny - 1 else 0
            dx = 1 if ix < nx - 1 else 0
            i = iz * sz + iy * sy + ix
            raw[x] = _lerp8(s, lut, i, dx, dy, dz, cz[x] - iz, cy[x] - iy, cx[x] - ix)
        else:
            i = _nearest(cz[x], cy[x], cx[x], sz32, sy32)
            raw[x] = lut[s[i]] if lut is not None else s[i]
    if p.has_mask:
        for x in range(raw.shape[0]):
            if 0.0 <= cz[x] <= zmax and 0.0 <= cy[x] <= ymax and 0.0 <= cx[x] <= xmax:
                mrow[x] = ms[_nearest(cz[x], cy[x], cx[x], sz32, sy32)]
            else:
                mrow[x] = 0


# --- the kernels ---------------------------------------------------------------------------------


@njit(nogil=True, fastmath={"contract"})
def _rows(
    src: np.ndarray,
    lut: np.ndarray,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    sampling: Sampling,
    chain: Intensity,
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
    trilinear = sampling.order == 1
    has_mask, has_elastic = sampling.has_mask, sampling.has_elastic
    cz = np.empty(ox)
    cy = np.empty(ox)
    cx = np.empty(ox)
    work = np.empty((4, ox), precision.dtype)
    wz, wy, wx, raw = work[0], work[1], work[2], work[3]
    pairs = pair_rows(s, ox)
    v = pairs.view(s.dtype)  # (4, 2 * ox): the corner's value, then its +x neighbour
    vals = values_rows(v, lut)
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
    col = (m02, m12, m22)  # one step along an output row
    for band in range(0, oy, BAND):  # rows band..band + BAND of every z, then the next band
        for z in range(z0, z1):
            for y in range(band, min(band + BAND, oy)):
                bz = m00 * z + m01 * y + m03
                by = m10 * z + m11 * y + m13
                bx = m20 * z + m21 * y + m23
                start = (bz, by, bx)
                if has_elastic:
                    _affine_coords(cz, cy, cx, start, col)
                    _elastic_row(cz, cy, cx, grid, z, y, (oz, oy, ox), line)
                    fast = _all_inside(cz, cy, cx, zmax, ymax, xmax)
                else:
                    fast = _ends_inside(start, col, ox - 1, zmax, ymax, xmax)
                    if not (fast and trilinear):
                        _affine_coords(cz, cy, cx, start, col)
                mrow = mout[z, y] if has_mask else mout[0, 0]
                if fast and trilinear:
                    if has_elastic:
                        _corners(cz, cy, cx, wz, wy, wx, corner, near, sz32, sy32, has_mask)
                    else:
                        _affine_corners(start, col, wz, wy, wx, corner, near, sz32, sy32, has_mask)
                    if z + AHEAD < z1 and last > 0:
                        ahead = (bz + m00 * AHEAD, by + m10 * AHEAD, bx + m20 * AHEAD)
                        _prefetch_row(s, ahead, col, ox, sz, sy, last)
                    _gather(s, ms, corner, near, sy, sz, pairs, mrow, has_mask)
                    # the trilinear values, float16 bits first through lut (outside the
                    # vectorised loop). These loops stay here: as an inlined helper taking its
                    # seven row arrays they made the kernel 6% slower (float32, 64^3)
                    if lut is not None:
                        for k in range(4):
                            for e in range(2 * ox):
                                vals[k, e] = lut[v[k, e]]
                    for x in range(ox):
                        e, f = 2 * x, 2 * x + 1
                        raw[x] = _lerp(
                            like(raw, vals[0, e]),
                            like(raw, vals[0, f]),
                            like(raw, vals[1, e]),
                            like(raw, vals[1, f]),
                            like(raw, vals[2, e]),
                            like(raw, vals[2, f]),
                            like(raw, vals[3, e]),
                            like(raw, vals[3, f]),
                            wz[x],
                            wy[x],
                            wx[x],
                        )
                else:
                    _boundary_row(s, lut, ms, (nz, ny, nx), cz, cy, cx, raw, mrow, sampling)
                finish_row(raw, out[z, y], words, (z * oy + y) * ox, k0, k1, chain)


@njit(nogil=True, parallel=True)
def _rows_parallel(
    src: np.ndarray,
    lut: np.ndarray,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    sampling: Sampling,
    chain: Intensity,
    key: np.uint64,
    precision: np.ndarray,
    chunks: int,
) -> None:
    oz = out.shape[0]
    for c in prange(chunks):
        z0, z1 = c * oz // chunks, (c + 1) * oz // chunks
        _rows(src, lut, msrc, out, mout, m, grid, sampling, chain, key, precision, z0, z1)


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


CACHED = cache_if_unchanged(__file__, INLINED, INLINED_SHA256, _rows, _rows_parallel)

_PRECISION = {np.dtype(t): np.zeros(0, t) for t in (np.float32, np.float64)}


def resample(
    src: np.ndarray,
    lut: np.ndarray | None,
    msrc: np.ndarray,
    out: np.ndarray,
    mout: np.ndarray,
    m: np.ndarray,
    grid: np.ndarray,
    sampling: Sampling,
    chain: Intensity,
    key: int,
    threads: int = 1,
    precision: type = np.float64,
) -> None:
    """Run the fused kernel serially (``threads=1``) or split over numba threads, interpolating
    in ``precision`` (np.float32 or np.float64)."""
    ukey = np.uint64(key)
    like_ = _PRECISION[np.dtype(precision)]
    args = (src, lut, msrc, out, mout, m, grid, sampling, chain, ukey, like_)
    if threads <= 1:
        _rows(*args, 0, out.shape[0])
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _rows_parallel(*args, min(out.shape[0], 4 * threads))
    finally:
        numba.set_num_threads(before)
