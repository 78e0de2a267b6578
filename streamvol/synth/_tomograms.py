"""Synthetic cryo-ET tomograms with particle picks, written as a copick project.

Six particle types with the CZII names and radii, each drawn as a distinct shape, placed
without overlap, blurred more along z than in-plane (like a missing wedge), and buried in
structured noise. ``render_tomogram`` is the in-memory kernel; ``tomograms`` writes runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from streamvol.synth._common import (
    Progress,
    Shape3,
    advance,
    as_shape,
    check_n,
    local_grid,
    random_rotation,
    staged_output,
    unit_noise,
)

VOXEL_SIZE = 10.0  # Angstrom
DEFAULT_SIZE: Shape3 = (64, 128, 128)
DEFAULT_RUNS = 2
PER_TYPE = 4  # particles of each type in a default-sized volume; scales with the volume
TOMOGRAM_NAME = "denoised"
LEVELS = 3


@dataclass(frozen=True, slots=True)
class Particle:
    """One CZII particle type: name, copick label, radius in Angstrom, display colour."""

    name: str
    label: int
    radius: float
    color: tuple[int, int, int, int]

    @property
    def radius_voxels(self) -> float:
        return self.radius / VOXEL_SIZE


PARTICLES: tuple[Particle, ...] = (
    Particle("apo-ferritin", 1, 60.0, (0, 117, 220, 128)),
    Particle("beta-amylase", 2, 65.0, (153, 63, 0, 128)),
    Particle("beta-galactosidase", 3, 90.0, (76, 0, 92, 128)),
    Particle("ribosome", 4, 150.0, (0, 92, 49, 128)),
    Particle("thyroglobulin", 5, 130.0, (43, 206, 72, 128)),
    Particle("virus-like-particle", 6, 135.0, (255, 204, 153, 128)),
)
MIN_SIZE: Shape3 = (2 * int(np.ceil(max(p.radius_voxels for p in PARTICLES))) + 4,) * 3


@dataclass(frozen=True)
class Tomogram:
    """One rendered run.

    ``image`` is float32 (z, y, x), zero mean and unit std; ``labels`` is uint8 with the
    particle type label (1..6) on each particle's filled footprint and 0 elsewhere;
    ``instances`` is int32 with 1 + the particle's index in ``centres``; ``centres`` holds
    integer voxel centres (z, y, x) and ``types`` their labels.
    """

    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    centres: np.ndarray
    types: np.ndarray


# --- particle shapes, in the particle's own frame (u: (3, ...) offsets in voxels) ------------


def _occupancy(sdf: np.ndarray) -> np.ndarray:
    """Antialiased inside-ness from a signed distance: 1 inside, 0 outside, a 1-voxel ramp."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _norm(u: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("i...,i...->...", u, u))


def _ellipsoid_sdf(u: np.ndarray, axes: Sequence[float]) -> np.ndarray:
    a = np.asarray(axes, dtype=np.float32).reshape(3, *([1] * (u.ndim - 1)))
    k0 = _norm(u / a)
    k1 = _norm(u / (a * a))
    inner = -float(np.min(axes))
    return np.where(k1 > 1e-6, k0 * (k0 - 1.0) / np.maximum(k1, 1e-6), inner)


def _sphere_sdf(u: np.ndarray, centre: Sequence[float], radius: float) -> np.ndarray:
    c = np.asarray(centre, dtype=np.float32).reshape(3, *([1] * (u.ndim - 1)))
    return _norm(u - c) - radius


def _hollow_shell(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """apo-ferritin: a thick hollow protein cage."""
    dist = _norm(u)
    thick = 2.5
    return _occupancy(np.abs(dist - (r - thick / 2)) - thick / 2), dist <= r


def _prolate(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """beta-amylase: a solid elongated ellipsoid."""
    sdf = _ellipsoid_sdf(u, (r, 0.5 * r, 0.5 * r))
    return _occupancy(sdf), sdf <= 0.5


def _four_lobes(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """beta-galactosidase: four lobes in a square around a small core."""
    d = 0.5 * r / np.sqrt(2.0)
    lobes = [_sphere_sdf(u, (0.0, sy * d, sx * d), 0.5 * r) for sy in (-1, 1) for sx in (-1, 1)]
    sdf = np.minimum.reduce([*lobes, _sphere_sdf(u, (0, 0, 0), 0.3 * r)])
    return _occupancy(sdf), sdf <= 0.5


def _two_subunits(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """ribosome: a large round subunit and a smaller flattened one, fused."""
    large = _sphere_sdf(u, (0.35 * r, 0, 0), 0.62 * r)
    small = _ellipsoid_sdf(
        u - np.float32([-0.5 * r, 0, 0]).reshape(3, 1, 1, 1), (0.3 * r, 0.5 * r, 0.45 * r)
    )
    sdf = np.minimum(large, small)
    return 1.15 * _occupancy(sdf), sdf <= 0.5


def _dumbbell(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """thyroglobulin: two globules joined by a narrow waist."""
    ends = np.minimum(
        _sphere_sdf(u, (0.58 * r, 0, 0), 0.42 * r), _sphere_sdf(u, (-0.58 * r, 0, 0), 0.42 * r)
    )
    along = np.clip(u[0], -0.58 * r, 0.58 * r)
    rod = np.sqrt((u[0] - along) ** 2 + u[1] ** 2 + u[2] ** 2) - 0.22 * r
    sdf = np.minimum(ends, rod)
    return _occupancy(sdf), sdf <= 0.5


def _icosahedron_vertices() -> np.ndarray:
    phi = (1 + np.sqrt(5)) / 2
    v = [(0, s1, s2 * phi) for s1 in (-1, 1) for s2 in (-1, 1)]
    v = [p for q in v for p in (q, (q[1], q[2], q[0]), (q[2], q[0], q[1]))]
    arr = np.asarray(v, dtype=np.float32)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


_ICOSAHEDRON = _icosahedron_vertices()


def _studded_capsid(u: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """virus-like-particle: a thin capsid with twelve surface knobs and faint contents."""
    dist = _norm(u)
    shell = np.abs(dist - (r - 2.5)) - 1.0
    knobs = np.minimum.reduce([_sphere_sdf(u, (r - 1.6) * v, 1.6) for v in _ICOSAHEDRON])
    occ = np.maximum(_occupancy(np.minimum(shell, knobs)), 0.25 * _occupancy(dist - (r - 3.5)))
    return occ, dist <= r


SHAPES: dict[str, Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]] = {
    "apo-ferritin": _hollow_shell,
    "beta-amylase": _prolate,
    "beta-galactosidase": _four_lobes,
    "ribosome": _two_subunits,
    "thyroglobulin": _dumbbell,
    "virus-like-particle": _studded_capsid,
}


# --- placement and rendering ------------------------------------------------------------------


def _membrane(rng: np.random.Generator, shape: Shape3) -> tuple[np.ndarray, float]:
    """A large sphere whose surface crosses the volume: a curved membrane as a distractor."""
    radius = float(rng.uniform(1.5, 3.0) * max(shape))
    point = rng.uniform(0.25, 0.75, size=3) * np.asarray(shape)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return point - direction * radius, radius


def _place(
    rng: np.random.Generator,
    shape: Shape3,
    radii: np.ndarray,
    membrane: tuple[np.ndarray, float],
    attempts: int = 16,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample integer centres: each ball inside the volume, apart from the others
    and from the membrane. Returns the centres and the indices into ``radii`` placed."""
    centres: list[np.ndarray] = []
    kept: list[int] = []
    placed_r: list[float] = []
    m_centre, m_radius = membrane
    for i, r in enumerate(radii):
        margin = int(np.ceil(r)) + 1
        lo, hi = margin, np.asarray(shape) - margin
        for _ in range(attempts):
            cand = rng.integers(lo, hi, size=(batch, 3))
            ok = np.abs(np.linalg.norm(cand - m_centre, axis=1) - m_radius) > r + 3
            if centres:
                d = np.linalg.norm(cand[:, None, :] - np.asarray(centres)[None], axis=2)
                ok &= np.all(d >= np.asarray(placed_r)[None] + r + 1.0, axis=1)
            hit = np.flatnonzero(ok)
            if hit.size:
                centres.append(cand[hit[0]])
                placed_r.append(float(r))
                kept.append(i)
                break
    return np.asarray(centres, dtype=np.int64).reshape(-1, 3), np.asarray(kept, dtype=np.int64)


def particles_per_type(shape: Shape3) -> int:
    """How many particles of each type a run of ``shape`` aims for (scales with its volume)."""
    return max(1, round(PER_TYPE * float(np.prod(shape)) / float(np.prod(DEFAULT_SIZE))))


def render_tomogram(
    shape: int | Sequence[int] = DEFAULT_SIZE, seed: int | Sequence[int] = 0
) -> Tomogram:
    """Draw one synthetic tomogram and its ground truth, in memory.

    Deterministic for ``seed`` (anything ``np.random.default_rng`` accepts); run ``k`` of
    ``tomograms(out, seed=s)`` is ``render_tomogram(size, (s, k))``.
    """
    shape = as_shape(shape, DEFAULT_SIZE, minimum=MIN_SIZE, name="shape")
    rng = np.random.default_rng(seed)
    membrane = _membrane(rng, shape)
    per_type = particles_per_type(shape)
    # largest first, so the big ones still find room
    order = sorted(PARTICLES, key=lambda p: -p.radius)
    kinds = [p for p in order for _ in range(per_type)]
    radii = np.asarray([p.radius_voxels for p in kinds])
    centres, kept = _place(rng, shape, radii, membrane)
    kinds = [kinds[i] for i in kept]

    density = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.int32)
    for idx, (c, p) in enumerate(zip(centres, kinds, strict=True)):
        half = [int(np.ceil(p.radius_voxels)) + 1] * 3
        sl, d = local_grid(c, half, shape)
        rot = random_rotation(rng).astype(np.float32)
        u = np.einsum("ji,j...->i...", rot, d)  # rot.T @ d: volume offsets -> particle frame
        occ, filled = SHAPES[p.name](u, p.radius_voxels)
        amp = np.float32(rng.uniform(0.8, 1.2))
        density[sl] = np.maximum(density[sl], amp * occ)
        labels[sl][filled] = p.label
        instances[sl][filled] = idx + 1

    grid = np.indices(shape, dtype=np.float32)
    off = grid - membrane[0].astype(np.float32).reshape(3, 1, 1, 1)
    sheet = _occupancy(np.abs(_norm(off) - membrane[1]) - 0.9)
    density = np.maximum(density, np.float32(rng.uniform(0.5, 0.8)) * sheet)

    # point spread: stretched along z, as the missing wedge does in real tomograms
    image = ndimage.gaussian_filter(density, sigma=(1.6, 0.8, 0.8))
    image += 0.20 * unit_noise(rng, shape, 4.0)
    image += 0.18 * unit_noise(rng, shape, 1.2)
    image += 0.25 * rng.standard_normal(shape, dtype=np.float32)
    image -= image.mean()
    image /= image.std()
    types = np.asarray([p.label for p in kinds], dtype=np.int64)
    return Tomogram(image.astype(np.float32), labels, instances, centres, types)


# --- writing ----------------------------------------------------------------------------------


def block_mean(a: np.ndarray, factor: int = 2) -> np.ndarray:
    """Downsample by averaging ``factor``^3 blocks (trailing remainders are dropped)."""
    z, y, x = (s // factor for s in a.shape)
    a = a[: z * factor, : y * factor, : x * factor]
    return a.reshape(z, factor, y, factor, x, factor).mean(axis=(1, 3, 5), dtype=np.float64)


def write_ome_zarr(path: Path, image: np.ndarray, voxel_size: float, levels: int = LEVELS) -> None:
    """Write ``image`` as an OME-NGFF 0.4 multiscale group (zarr v2), levels "0", "1", ..."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    level = image.astype(np.float32)
    for lvl in range(levels):
        if lvl:
            level = block_mean(level).astype(np.float32)
        arr = root.create_array(
            str(lvl),
            shape=level.shape,
            chunks=tuple(min(32, s) for s in level.shape),
            dtype="float32",
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        arr[...] = level
        scale = [voxel_size * 2**lvl] * 3
        datasets.append(
            {"path": str(lvl), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": TOMOGRAM_NAME,
            "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
            "datasets": datasets,
        }
    ]


def copick_config() -> dict:
    """The copick project configuration naming the six particle types."""
    return {
        "name": "streamvol-synth",
        "version": "0.5.0",
        "pickable_objects": [
            {
                "name": p.name,
                "is_particle": True,
                "label": p.label,
                "radius": p.radius,
                "color": list(p.color),
            }
            for p in PARTICLES
        ],
        "static_root": "static",
        "overlay_root": "overlay",
    }


def picks_document(run: str, particle: Particle, centres: np.ndarray) -> dict:
    """A copick pick file for one type in one run; locations in Angstrom, x the last axis."""
    identity = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
    points = [
        {
            "location": {
                "x": float(x) * VOXEL_SIZE,
                "y": float(y) * VOXEL_SIZE,
                "z": float(z) * VOXEL_SIZE,
            },
            "transformation_": identity,
            "instance_id": 0,
        }
        for z, y, x in centres
    ]
    return {
        "pickable_object_name": particle.name,
        "user_id": "curation",
        "session_id": "0",
        "run_name": run,
        "voxel_spacing": None,
        "unit": "angstrom",
        "points": points,
        "trust_orientation": True,
    }


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def tomograms(
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write ``n`` synthetic runs (default 2, size (64, 128, 128)) as a copick project at ``out``.

    Layout: ``copick_config.json``; ``static/ExperimentRuns/TS_<k>/VoxelSpacing10.000/
    denoised.zarr`` (OME-NGFF 0.4, levels 0-2, float32); ``overlay/ExperimentRuns/TS_<k>/
    Picks/<particle>.json`` (copick picks in Angstrom). ``progress(1)`` after each run.
    """
    n = check_n(DEFAULT_RUNS if n is None else n)
    shape = as_shape(size, DEFAULT_SIZE, minimum=MIN_SIZE)
    with staged_output(out, overwrite=overwrite) as stage:
        _write_json(stage / "copick_config.json", copick_config())
        for k in range(n):
            run = f"TS_{k}"
            tomo = render_tomogram(shape, (seed, k))
            vs_dir = stage / "static" / "ExperimentRuns" / run / f"VoxelSpacing{VOXEL_SIZE:.3f}"
            write_ome_zarr(vs_dir / f"{TOMOGRAM_NAME}.zarr", tomo.image, VOXEL_SIZE)
            picks_dir = stage / "overlay" / "ExperimentRuns" / run / "Picks"
            for p in PARTICLES:
                doc = picks_document(run, p, tomo.centres[tomo.types == p.label])
                _write_json(picks_dir / f"{p.name}.json", doc)
            advance(progress)
    return Path(out)
