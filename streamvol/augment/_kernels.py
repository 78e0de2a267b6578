"""numba kernels: one pass over the output that resamples, normalises, adjusts and adds noise.

Per output row (fixed z, y) the kernel fills small row buffers with plain loops the compiler can
vectorise: the input coordinates (affine in x, plus the elastic displacement), the sampled raw
values (trilinear or nearest; a row that lies wholly inside the stored block skips the bounds
tests), the mask labels (nearest, in the image's loop so both gathers' cache misses overlap),
the noise (``noise_row``), and finally the intensity chain into the float32 output. Nothing is
allocated per voxel and no Python runs inside.

Boundary: a coordinate outside ``[0, n - 1]`` on any axis reads the raw value ``cval`` (mask:
0), exactly as ``scipy.ndimage.affine_transform(mode="constant")``. Nearest rounds halves up, as
scipy's order 0 does.

Threads: ``_rows`` handles the z range [z0, z1); ``_rows_parallel`` splits z over numba threads.
Every voxel's value depends on its own index only, so the output is the same for any split.

The numba half of the counter-based noise (designed in ``_noise``) lives here too: numba's
on-disk cache only watches a function's own file, so code the kernels inline must share it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# flags (int64 array)
ORDER, HAS_MASK, HAS_ELASTIC, DO_GAMMA, DO_NOISE = range(5)
# float parameters (float64 array)
OFFSET, SCALE, LO, SPAN, GAMMA, MEAN, CONTRAST, BRIGHTNESS, NOISE_STD, CVAL = range(10)
N_FLAGS, N_FLOATS = 5, 10

# --- counter-based Gaussian noise (the design is in _noise.py's docstring) ----------------------

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MAX_TRIES = 63

# numba sees these module globals as compile-time constants
_U_GOLDEN = np.uint64(GOLDEN)
_U_M1 = np.uint64(MIX1)
_U_M2 = np.uint64(MIX2)
_U1 = np.uint64(1)
_U7 = np.uint64(7)
_U8 = np.uint64(8)
_U9 = np.uint64(9)
_U11 = np.uint64(11)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_UFF = np.uint64(0xFF)
_U_LOW32 = np.uint64(0xFFFFFFFF)
_U_MASK31 = np.uint64((1 << 31) - 1)

TAIL_R = 3.6541528853610088  # start of the tail
INV_R = 1.0 / TAIL_R
_V = 0.00492867323399  # area of each layer


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 256-layer ziggurat tables for 31-bit magnitudes (ki: int32 acceptance thresholds,
    wi: layer widths / 2**31, fi: the density at each layer's edge)."""
    m1 = 2.0**31
    ki = np.zeros(256, np.int32)
    wi = np.zeros(256, np.float64)
    fi = np.zeros(256, np.float64)
    dn = tn = TAIL_R
    q = _V / math.exp(-0.5 * dn * dn)
    ki[0] = int((dn / q) * m1)
    wi[0], wi[255] = q / m1, dn / m1
    fi[0], fi[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_V / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = int((dn / tn) * m1)
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


KI, WI, FI = _tables()


def noise_key(noise_seed: int) -> int:
    """The per-sample key (``mix64`` of the seed), as a Python int in [0, 2**64)."""
    x = int(noise_seed) & MASK64
    x = ((x ^ (x >> 30)) * MIX1) & MASK64
    x = ((x ^ (x >> 27)) * MIX2) & MASK64
    return x ^ (x >> 31)


@njit(cache=True)
def _mix64(x: np.uint64) -> np.uint64:
    x = (x ^ (x >> _U30)) * _U_M1
    x = (x ^ (x >> _U27)) * _U_M2
    return x ^ (x >> _U31)


@njit(cache=True)
def _slow_path(
    base: np.uint64, c: np.uint64, layer: int, x: float, negative: bool
) -> tuple[bool, float]:
    """The wedge or tail test of a word the fast path rejected (~1% of voxels)."""
    b = _mix64(base + (c + _U1) * _U_GOLDEN)
    if layer == 0:
        u1 = (np.float64(np.int64(b >> _U32)) + 0.5) * 2.3283064365386963e-10
        u2 = (np.float64(np.int64(b & _U_LOW32)) + 0.5) * 2.3283064365386963e-10
        xx = -math.log(u1) * INV_R
        yy = -math.log(u2)
        if yy + yy > xx * xx:
            return True, (-(TAIL_R + xx) if negative else TAIL_R + xx)
        return False, 0.0
    u = np.float64(np.int64(b >> _U11)) * 1.1102230246251565e-16
    if FI[layer] + u * (FI[layer - 1] - FI[layer]) < math.exp(-0.5 * x * x):
        return True, x
    return False, 0.0


@njit(cache=True)
def normal_at(key: np.uint64, index: np.uint64) -> float:
    """One standard normal for voxel ``index`` of the sample with key ``key`` (numba)."""
    base = key + (index << _U7) * _U_GOLDEN
    c = _U1
    for _ in range(MAX_TRIES):
        h = _mix64(base + c * _U_GOLDEN)
        layer = np.int32(h & _UFF)
        rabs = np.int32((h >> _U9) & _U_MASK31)
        sign = np.int32((h >> _U8) & _U1)
        # branch-free sign: a 50/50 branch here costs more than the rest of the draw
        x = rabs * WI[layer] * (1.0 - 2.0 * np.float64(sign))
        if rabs < KI[layer]:
            return x
        ok, value = _slow_path(base, c, layer, x, sign == 1)
        if ok:
            return value
        c += np.uint64(2)
    return 0.0


@njit(cache=True)
def noise_row(out: np.ndarray, pending: np.ndarray, key: np.uint64, first: int) -> None:
    """``out[j] = normal_at(key, first + j)`` for a row: a branch-free fast pass the compiler can
    vectorise, then the rare rejected voxels one by one (3x faster than calling ``normal_at``).
    ``pending`` is a uint8 scratch row."""
    n = out.shape[0]
    rejected = np.uint8(0)
    for j in range(n):
        h = _mix64(key + (np.uint64(first + j) << _U7) * _U_GOLDEN + _U_GOLDEN)
        layer = np.int32(h & _UFF)
        rabs = np.int32((h >> _U9) & _U_MASK31)
        out[j] = rabs * WI[layer] * (1.0 - 2.0 * np.float64(np.int32((h >> _U8) & _U1)))
        r = np.uint8(rabs >= KI[layer])
        pending[j] = r
        rejected |= r
    if rejected:
        for j in range(n):
            if pending[j]:
                out[j] = normal_at(key, np.uint64(first + j))


@njit(cache=True)
def fill_normal(out: np.ndarray, key: np.uint64) -> None:
    """The whole field for ``key`` into ``out`` (any shape, C order)."""
    flat = out.reshape(-1)
    pending = np.empty(flat.size, np.uint8)
    noise_row(flat, pending, key, 0)


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
def _round(c: float) -> int:
    """Nearest index of a coordinate c >= 0, halves up: floor(c) + (frac >= 1/2), exact (unlike
    int(c + 0.5), which rounds c + 0.5 first)."""
    i = int(c)
    return i + (1 if c - i >= 0.5 else 0)


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
    ``+dx``, ``+dy``, ``+dz`` (0 at the block's last voxel, whose weight is then 0), float64."""
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


@njit(cache=True)
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
    z0: int,
    z1: int,
) -> None:
    """Fill ``out[z0:z1]`` (and ``mout``) from ``src`` through the 3x4 matrix ``m``. ``lut`` is
    None, or a table the raw values index (float16 read as its uint16 bits): a None argument
    is pruned at compile time, so each dtype gets a kernel without the test."""
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
    offset, scale, cval = fp[OFFSET], fp[SCALE], fp[CVAL]
    lo, span, gamma = fp[LO], fp[SPAN], fp[GAMMA]
    mean, contrast, brightness, std = fp[MEAN], fp[CONTRAST], fp[BRIGHTNESS], fp[NOISE_STD]
    # without gamma, normalise + contrast + brightness is one affine map of the raw value
    gain = scale * contrast
    bias = (-offset * scale - mean) * contrast + mean + brightness
    cz = np.empty(ox)
    cy = np.empty(ox)
    cx = np.empty(ox)
    wz = np.empty(ox)
    wy = np.empty(ox)
    wx = np.empty(ox)
    corner = np.empty(ox, np.int32)
    sy32, sz32 = np.int32(sy), np.int32(sz)
    raw = np.empty(ox)
    noise = np.zeros(ox)
    pending = np.empty(ox, np.uint8)
    line = np.empty((3, grid.shape[3]))
    for z in range(z0, z1):
        for y in range(oy):
            bz = m[0, 0] * z + m[0, 1] * y + m[0, 3]
            by = m[1, 0] * z + m[1, 1] * y + m[1, 3]
            bx = m[2, 0] * z + m[2, 1] * y + m[2, 3]
            for x in range(ox):
                cz[x] = bz + m[0, 2] * x
                cy[x] = by + m[1, 2] * x
                cx[x] = bx + m[2, 2] * x
            # a fast row lies strictly inside [0, n - 1): every +1 neighbour exists
            fast = True
            if has_elastic:
                _elastic_row(cz, cy, cx, grid, z, y, (oz, oy, ox), line)
                for x in range(ox):
                    if not (0.0 <= cz[x] < zmax and 0.0 <= cy[x] < ymax and 0.0 <= cx[x] < xmax):
                        fast = False
                        break
            else:  # affine in x: the row is inside iff both ends are
                e = ox - 1
                fast = (
                    0.0 <= cz[0] < zmax
                    and 0.0 <= cy[0] < ymax
                    and 0.0 <= cx[0] < xmax
                    and 0.0 <= cz[e] < zmax
                    and 0.0 <= cy[e] < ymax
                    and 0.0 <= cx[e] < xmax
                )
            if fast and order == 1:
                for x in range(ox):
                    # int32: the conversions vectorise (AVX2 has no float64 -> int64)
                    iz, iy, ix = np.int32(cz[x]), np.int32(cy[x]), np.int32(cx[x])
                    wz[x], wy[x], wx[x] = cz[x] - iz, cy[x] - iy, cx[x] - ix
                    corner[x] = iz * sz32 + iy * sy32 + ix
                if has_mask:  # in the same loop, so both gathers' cache misses overlap
                    for x in range(ox):
                        raw[x] = _lerp8(s, lut, corner[x], 1, sy, sz, wz[x], wy[x], wx[x])
                        # nearest: the corner plus one where the weight is >= 1/2
                        i = (
                            corner[x]
                            + np.int32(wx[x] >= 0.5)
                            + sy32 * np.int32(wy[x] >= 0.5)
                            + sz32 * np.int32(wz[x] >= 0.5)
                        )
                        mout[z, y, x] = ms[i]
                else:
                    for x in range(ox):
                        raw[x] = _lerp8(s, lut, corner[x], 1, sy, sz, wz[x], wy[x], wx[x])
            else:
                for x in range(ox):
                    if not (0.0 <= cz[x] <= zmax and 0.0 <= cy[x] <= ymax and 0.0 <= cx[x] <= xmax):
                        raw[x] = cval
                    elif order == 1:
                        iz, iy, ix = int(cz[x]), int(cy[x]), int(cx[x])
                        # at an axis's last voxel the weight is 0: the neighbour is itself
                        dz = sz if iz < nz - 1 else 0
                        dy = sy if iy < ny - 1 else 0
                        dx = 1 if ix < nx - 1 else 0
                        i = iz * sz + iy * sy + ix
                        raw[x] = _lerp8(s, lut, i, dx, dy, dz, cz[x] - iz, cy[x] - iy, cx[x] - ix)
                    else:
                        i = _round(cz[x]) * sz + _round(cy[x]) * sy + _round(cx[x])
                        raw[x] = lut[s[i]] if lut is not None else s[i]
            if has_mask and not (fast and order == 1):
                for x in range(ox):
                    if 0.0 <= cz[x] <= zmax and 0.0 <= cy[x] <= ymax and 0.0 <= cx[x] <= xmax:
                        i = _round(cz[x]) * sz + _round(cy[x]) * sy + _round(cx[x])
                        mout[z, y, x] = ms[i]
                    else:
                        mout[z, y, x] = 0
            if do_noise:
                noise_row(noise, pending, key, (z * oy + y) * ox)
            if do_gamma:
                for x in range(ox):
                    v = (raw[x] - offset) * scale
                    r = min(max((v - lo) / span, 0.0), 1.0)
                    v = r**gamma * span + lo
                    raw[x] = (v - mean) * contrast + mean + brightness
                g, b = 1.0, 0.0
            else:
                g, b = gain, bias
            if do_noise:
                for x in range(ox):
                    out[z, y, x] = raw[x] * g + b + std * noise[x]
            else:
                for x in range(ox):
                    out[z, y, x] = raw[x] * g + b


@njit(cache=True, parallel=True)
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
            c * oz // chunks,
            (c + 1) * oz // chunks,
        )


@njit(cache=True)
def add_noise(out: np.ndarray, key: np.uint64, std: float) -> None:
    """``out += std * normal_field`` (used after blur, so the noise itself is not blurred)."""
    oz, oy, ox = out.shape
    noise = np.empty(ox)
    pending = np.empty(ox, np.uint8)
    for z in range(oz):
        for y in range(oy):
            noise_row(noise, pending, key, (z * oy + y) * ox)
            for x in range(ox):
                out[z, y, x] = out[z, y, x] + std * noise[x]


@njit(cache=True)
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
) -> None:
    """Run the fused kernel serially (``threads=1``) or split over numba threads."""
    ukey = np.uint64(key)
    if threads <= 1:
        _rows(src, lut, msrc, out, mout, m, grid, fp, flags, ukey, 0, out.shape[0])
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        chunks = min(out.shape[0], 4 * threads)
        _rows_parallel(src, lut, msrc, out, mout, m, grid, fp, flags, ukey, chunks)
    finally:
        numba.set_num_threads(before)
