"""Synthetic nuclei whose class is their chromatin texture, written as folders of slices.

Each sample is one randomly shaped and oriented ellipsoidal nucleus. The three classes differ
only in texture (clump size, speckle density); every nucleus' mean intensity inside its mask
is set to a jittered level drawn independently of its class, so brightness carries no label.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from streamvol.errors import BadOption
from streamvol.synth._common import (
    Progress,
    Shape3,
    advance,
    as_shape,
    check_n,
    random_rotation,
    staged_output,
    unit_noise,
    write_slices,
)

CLASSES: tuple[str, ...] = ("condensed", "granular", "speckled")
DEFAULT_SIZE: Shape3 = (24, 48, 48)
DEFAULT_SAMPLES = 24
MIN_SIZE: Shape3 = (8, 16, 16)
MEAN_LEVEL = 1500.0  # mean intensity inside the mask, before noise, in counts
LEVEL_JITTER = 0.05  # +- relative, drawn per nucleus whatever its class
BACKGROUND = 100.0


@dataclass(frozen=True)
class Nucleus:
    """One rendered sample: ``raw`` uint16 (z, y, x), ``mask`` uint8 (1 inside), class index."""

    raw: np.ndarray
    mask: np.ndarray
    label: int


def _ellipsoid(rng: np.random.Generator, shape: Shape3) -> tuple[np.ndarray, np.ndarray]:
    """A random ellipsoid fitting inside ``shape``: its level function (<1 inside) and depth.

    Coordinates are normalised to [-1, 1] per axis, so an anisotropic volume gets a nucleus
    flattened along its short axis, as nuclei imaged with coarse z steps are.
    """
    axes = rng.uniform(0.6, 1.0, size=3)
    rot = random_rotation(rng)
    # extent of the rotated ellipsoid along each volume axis; shrink it to fit with a margin
    extent = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
    axes *= min(1.0, 0.88 / extent.max())
    extent = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
    centre = rng.uniform(-1, 1, size=3) * np.clip(0.92 - extent, 0, None)
    half = (np.asarray(shape) - 1) / 2.0
    coords = [(np.arange(s, dtype=np.float32) - h) / h for s, h in zip(shape, half, strict=True)]
    offset = centre.astype(np.float32).reshape(3, 1, 1, 1)
    grid = np.stack(np.meshgrid(*coords, indexing="ij")) - offset
    body = np.einsum("ji,j...->i...", rot.astype(np.float32), grid)  # volume -> nucleus frame
    scaled = body / axes.astype(np.float32).reshape(3, 1, 1, 1)
    level = np.sqrt(np.einsum("i...,i...->...", scaled, scaled))
    # approximate distance to the surface in voxels of the shortest axis, 0 on the envelope
    depth = (1.0 - level) * float(axes.min() * half.min())
    return level, depth


def _texture(rng: np.random.Generator, label: int, shape: Shape3, depth: np.ndarray) -> np.ndarray:
    """Chromatin density (positive, mean about 1) for class ``label``; parameters jittered."""
    nucleoplasm = np.exp(0.12 * unit_noise(rng, shape, 3.0))
    if CLASSES[label] == "condensed":
        # coarse heterochromatin clumps, partly pressed against the envelope
        clumps = np.exp(rng.uniform(0.55, 0.8) * unit_noise(rng, shape, rng.uniform(1.8, 2.6)))
        rim = 1.0 + rng.uniform(0.3, 0.7) * np.exp(-np.clip(depth, 0, None) / 1.5)
        tex = nucleoplasm * clumps * rim
    elif CLASSES[label] == "granular":
        # fine, dense grain everywhere
        grain = np.exp(rng.uniform(0.35, 0.55) * unit_noise(rng, shape, rng.uniform(0.6, 0.9)))
        tex = nucleoplasm * grain
    else:
        # smooth nucleoplasm with sparse bright foci
        density = rng.uniform(0.006, 0.014)
        dots = (rng.random(shape) < density).astype(np.float32)
        foci = ndimage.gaussian_filter(dots, rng.uniform(0.6, 0.8)) / density
        tex = nucleoplasm * (1.0 + rng.uniform(0.5, 0.8) * foci)
    # nucleoli: darker regions, in every class
    for _ in range(rng.integers(0, 3)):
        c = rng.uniform(0.3, 0.7, size=3) * np.asarray(shape)
        r = rng.uniform(0.08, 0.15) * np.asarray(shape)
        grid = np.indices(shape, dtype=np.float32)
        d2 = (((grid - c.reshape(3, 1, 1, 1)) / r.reshape(3, 1, 1, 1)) ** 2).sum(axis=0)
        tex = tex * (1.0 - 0.5 * np.exp(-d2 * 2.0))
    return tex.astype(np.float32)


def render_nucleus(
    label: int, shape: int | Sequence[int] = DEFAULT_SIZE, seed: int | Sequence[int] = 0
) -> Nucleus:
    """Draw one nucleus of class index ``label`` (into ``CLASSES``), in memory.

    Deterministic for ``seed``; sample ``k`` (1-based) of ``nuclei(out, seed=s)`` is
    ``render_nucleus(label, size, (s, k))``.
    """
    if label not in range(len(CLASSES)):
        raise BadOption("label", label, f"expected one of 0..{len(CLASSES) - 1}")
    shape = as_shape(shape, DEFAULT_SIZE, minimum=MIN_SIZE, name="shape")
    rng = np.random.default_rng(seed)
    level, depth = _ellipsoid(rng, shape)
    mask = level <= 1.0
    soft = np.clip((1.0 - level) * 8.0 + 0.5, 0.0, 1.0)
    signal = _texture(rng, label, shape, depth) * soft
    signal = ndimage.gaussian_filter(signal, sigma=(1.0, 0.6, 0.6))  # widefield-ish PSF
    # uneven illumination: a smooth multiplicative ramp across the field
    unit_grid = np.indices(shape) / np.asarray(shape).reshape(3, 1, 1, 1) - 0.5
    ramp = np.einsum("i,i...->...", rng.normal(size=3), unit_grid)
    signal *= 1.0 + 0.15 * ramp / max(np.abs(ramp).max(), 1e-6)
    level_k = MEAN_LEVEL * (1.0 + rng.uniform(-LEVEL_JITTER, LEVEL_JITTER))
    signal *= level_k / signal[mask].mean()
    expected = signal + BACKGROUND * (1.0 + 0.1 * unit_noise(rng, shape, 6.0))
    gain = 8.0  # counts per photon, so the shot noise is visible
    counts = gain * rng.poisson(np.clip(expected, 0, None) / gain) + rng.normal(0.0, 3.0, shape)
    raw = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return Nucleus(raw, mask.astype(np.uint8), label)


def class_labels(n: int, seed: int) -> np.ndarray:
    """Balanced class indices for ``n`` samples, shuffled by ``seed`` (counts differ by <= 1)."""
    return np.random.default_rng((seed, 0)).permutation(np.arange(n) % len(CLASSES))


def sample_names(n: int) -> list[str]:
    """Folder names ``0001, 0002, ...`` (wider when ``n`` needs it)."""
    width = max(4, len(str(n)))
    return [f"{k:0{width}d}" for k in range(1, n + 1)]


def nuclei(
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write ``n`` nuclei (default 24 of size (24, 48, 48)) as slice folders plus a class CSV.

    Layout: ``<out>/<sample>/raw/z0000.tif ...`` (uint16), ``<out>/<sample>/mask/z0000.tif
    ...`` (uint8, 1 inside), ``<out>/classes.csv`` (``sample,class``). ``progress(1)`` per sample.
    """
    n = check_n(DEFAULT_SAMPLES if n is None else n)
    shape = as_shape(size, DEFAULT_SIZE, minimum=MIN_SIZE)
    labels = class_labels(n, seed)
    names = sample_names(n)
    with staged_output(out, overwrite=overwrite) as stage:
        for k, (name, label) in enumerate(zip(names, labels, strict=True), start=1):
            nuc = render_nucleus(int(label), shape, (seed, k))
            write_slices(stage / name / "raw", nuc.raw)
            write_slices(stage / name / "mask", nuc.mask)
            advance(progress)
        with open(stage / "classes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sample", "class"])
            writer.writerows(
                [name, CLASSES[label]] for name, label in zip(names, labels, strict=True)
            )
    return Path(out)
