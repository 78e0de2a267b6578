"""Synthetic spot detection: one fluorescence stack and a table of candidate detections.

Half the candidates are true diffraction-limited spots (an anisotropic Gaussian PSF, longer
along z, of varied brightness); the rest are the false detections a spot detector makes:
irregular noise blobs, bright edges or ridges crossing the candidate, doublets of two close
spots, and dim shot-noise peaks. A crop around each candidate tells them apart, with effort.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from streamvol.errors import BadOption
from streamvol.synth._common import (
    Progress,
    Shape3,
    advance,
    as_shape,
    check_n,
    local_grid,
    staged_output,
    unit_noise,
)

DEFAULT_SIZE: Shape3 = (32, 128, 128)
DEFAULT_CANDIDATES = 200
LABEL_NAMES = ("false", "true")  # spots.csv labels by class id: 0 false detection, 1 spot
MARGIN: Shape3 = (4, 6, 6)  # candidates keep this far from the edges (z, y, x)
MIN_SIZE: Shape3 = (2 * MARGIN[0] + 4, 2 * MARGIN[1] + 4, 2 * MARGIN[2] + 4)
MIN_DISTANCE = 7.0  # voxels between any two candidates
FALSE_KINDS: tuple[str, ...] = ("blob", "edge", "doublet", "dim")
BACKGROUND = 60.0  # photons per voxel
OFFSET = 100  # camera offset, counts
SPOT_PEAK = 60.0  # median peak height of a true spot above background, photons


@dataclass(frozen=True)
class Spots:
    """One rendered stack: ``image`` uint16 (z, y, x); per candidate its integer ``coords``
    (z, y, x), ``labels`` (1 true spot, 0 false detection) and ``kinds`` ("spot" or one of
    ``FALSE_KINDS``)."""

    image: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    kinds: tuple[str, ...]


def default_candidates(shape: Sequence[int]) -> int:
    """The default candidate count for ``shape``: 200 at (32, 128, 128), scaled by volume."""
    return max(4, round(DEFAULT_CANDIDATES * float(np.prod(shape)) / float(np.prod(DEFAULT_SIZE))))


def _place(rng: np.random.Generator, shape: Shape3, n: int) -> np.ndarray:
    """Integer candidate positions inside the margins, closer than ``MIN_DISTANCE`` to none.

    Dart throwing over a random order of all allowed voxels with a map of the voxels still
    free, so it is exact: it fails only when no free voxel is left.
    """
    lo = np.asarray(MARGIN)
    region = tuple(int(s) for s in np.asarray(shape) - 2 * lo)
    free = np.ones(region, dtype=bool)
    r = int(np.ceil(MIN_DISTANCE)) - 1
    off = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    ball = np.sum(off**2, axis=0) < MIN_DISTANCE**2
    kept: list[tuple[int, int, int]] = []
    for flat in rng.permutation(free.size).tolist():
        c = np.unravel_index(flat, region)
        if not free[c]:
            continue
        kept.append(c)
        if len(kept) == n:
            return np.asarray(kept, dtype=np.int64) + lo
        a = [max(ci - r, 0) for ci in c]
        b = [min(ci + r + 1, s) for ci, s in zip(c, region, strict=True)]
        sub = ball[
            tuple(slice(ai - ci + r, bi - ci + r) for ai, bi, ci in zip(a, b, c, strict=True))
        ]
        free[tuple(slice(ai, bi) for ai, bi in zip(a, b, strict=True))] &= ~sub
    raise BadOption(
        "n",
        n,
        f"cannot place {n} candidates {MIN_DISTANCE:g} voxels apart in a volume of {shape} "
        f"(room for {len(kept)} in this draw); ask for fewer or a larger size",
    )


def _gaussian(signal: np.ndarray, centre: np.ndarray, amp: float, sigma: Sequence[float]) -> None:
    half = [int(np.ceil(3.5 * s)) for s in sigma]
    sl, d = local_grid(centre, half, signal.shape)
    s = np.asarray(sigma, dtype=np.float32).reshape(3, 1, 1, 1)
    signal[sl] += amp * np.exp(-0.5 * np.sum((d / s) ** 2, axis=0))


def _psf_sigma(rng: np.random.Generator) -> tuple[float, float, float]:
    sxy = rng.uniform(1.0, 1.4)
    return (sxy * rng.uniform(1.5, 2.0), sxy, sxy)


def _spot_peak(rng: np.random.Generator) -> float:
    return float(SPOT_PEAK * rng.lognormal(0.0, 0.5))


def _draw(rng: np.random.Generator, signal: np.ndarray, kind: str, c: np.ndarray) -> None:
    """Add one candidate's structure, of ``kind``, at ``c`` into ``signal`` (photons)."""
    shape = signal.shape
    if kind == "spot":
        _gaussian(signal, c + rng.uniform(-0.35, 0.35, 3), _spot_peak(rng), _psf_sigma(rng))
    elif kind == "doublet":
        direction = rng.normal(size=3) * np.array([0.3, 1.0, 1.0])
        direction /= np.linalg.norm(direction)
        sep = rng.uniform(2.2, 4.0)
        amp = _spot_peak(rng)
        sigma = _psf_sigma(rng)
        mid = c + rng.uniform(-0.3, 0.3, 3)
        _gaussian(signal, mid + direction * sep / 2, amp, sigma)
        _gaussian(signal, mid - direction * sep / 2, amp * rng.uniform(0.5, 1.0), sigma)
    elif kind == "blob":
        # irregular: thresholded smooth noise under a round, not z-stretched, envelope
        sl, d = local_grid(c, (4, 6, 6), shape)
        env = np.exp(-0.5 * np.sum(d**2, axis=0) / rng.uniform(1.8, 2.6) ** 2)
        g = ndimage.gaussian_filter(rng.standard_normal(env.shape), 0.8)
        lumpy = np.clip(g / (g.std() + 1e-9) + 0.6, 0.0, None) * env
        signal[sl] += _spot_peak(rng) * lumpy / (lumpy.max() + 1e-9)
    elif kind == "edge":
        # a ridge or a step through the candidate, reaching past the crop
        reach = rng.uniform(4.0, 6.0)
        half = int(np.ceil(3.0 * reach))
        sl, d = local_grid(c, (half, half, half), shape)
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        dist = np.einsum("i,i...->...", normal.astype(np.float32), d)
        env = np.exp(-0.5 * np.sum(d**2, axis=0) / reach**2)
        if rng.random() < 0.5:
            profile = np.exp(-0.5 * (dist / rng.uniform(0.8, 1.5)) ** 2)
        else:
            profile = 0.5 * (1.0 + np.tanh(dist / 0.8))
        signal[sl] += SPOT_PEAK * rng.uniform(0.5, 1.0) * profile * env
    elif kind == "dim":
        # shot-noise maximum: a few hot voxels, no PSF shape
        sl, _ = local_grid(c, (1, 1, 1), shape)
        peak = rng.uniform(2.5, 4.5) * np.sqrt(BACKGROUND)
        hot = (
            peak
            * rng.uniform(0.0, 0.6, size=signal[sl].shape)
            * (rng.random(signal[sl].shape) < 0.3)
        )
        signal[sl] += hot
        signal[tuple(c)] += peak
    else:  # pragma: no cover - kinds come from this module
        raise ValueError(f"unknown candidate kind {kind!r}")


def render_spots(
    shape: int | Sequence[int] = DEFAULT_SIZE, n: int | None = None, seed: int | Sequence[int] = 0
) -> Spots:
    """Draw one spot stack with ``n`` candidates (default scaled from 200), in memory.

    Deterministic for ``seed``; ``spots(out, n=n, size=shape, seed=s)`` writes
    ``render_spots(shape, n, s)``.
    """
    shape = as_shape(shape, DEFAULT_SIZE, minimum=MIN_SIZE, name="shape")
    n = check_n(default_candidates(shape) if n is None else n, minimum=2)
    rng = np.random.default_rng(seed)
    coords = _place(rng, shape, n)
    n_true = (n + 1) // 2
    kinds_sorted = ["spot"] * n_true + [
        FALSE_KINDS[i % len(FALSE_KINDS)] for i in range(n - n_true)
    ]
    kinds = tuple(kinds_sorted[i] for i in rng.permutation(n))

    signal = np.zeros(shape, np.float32)
    for kind, c in zip(kinds, coords, strict=True):
        _draw(rng, signal, kind, c)
    # slowly varying background (uneven staining and illumination)
    background = BACKGROUND * np.clip(
        1.0 + 0.3 * unit_noise(rng, shape, (6.0, 24.0, 24.0)), 0.2, None
    )
    photons = rng.poisson(background + signal).astype(np.float32)
    counts = photons + OFFSET + rng.normal(0.0, 1.5, shape)
    image = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    labels = np.asarray([1 if k == "spot" else 0 for k in kinds], dtype=np.int64)
    return Spots(image, coords, labels, kinds)


def spots(
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a spot stack (default (32, 128, 128), 200 candidates) and its candidate table.

    Layout: ``<out>/spots.tif`` (multi-page uint16, one page per z) and ``<out>/spots.csv``
    (``z,y,x,label``; integer voxels, label ``true`` for a spot, ``false`` for a false
    detection: class names, so plots and reports say them). ``progress(1)`` once, at the end.
    """
    shape = as_shape(size, DEFAULT_SIZE, minimum=MIN_SIZE)
    with staged_output(out, overwrite=overwrite) as stage:
        result = render_spots(shape, n, seed)
        tifffile.imwrite(stage / "spots.tif", result.image)
        with open(stage / "spots.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["z", "y", "x", "label"])
            writer.writerows(
                [int(z), int(y), int(x), LABEL_NAMES[int(lab)]]
                for (z, y, x), lab in zip(result.coords, result.labels, strict=True)
            )
        advance(progress)
    return Path(out)
