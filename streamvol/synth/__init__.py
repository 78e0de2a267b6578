"""Synthetic data sets in the on-disk layouts real data uses: for the demo, the docs and the tests.

Every kind is deterministic for a seed (``numpy.random.default_rng`` keyed by ``(seed, k)`` per
run or sample, never global state), small and fast by default, scaled by ``n`` and ``size``
(an int for a cube, or z, y, x), and written into a staging folder beside ``out`` that is
renamed to ``out`` only when complete. A non-empty ``out`` is refused unless ``overwrite=True``.

``tomograms`` (n=2 runs of (64, 128, 128), 10 Angstrom voxels): a copick project::

    out/copick_config.json                 six CZII particle types, radii 60-150 Angstrom
    out/static/ExperimentRuns/TS_<k>/VoxelSpacing10.000/denoised.zarr
                                           OME-NGFF 0.4 (zarr v2), float32, levels 0, 1, 2
    out/overlay/ExperimentRuns/TS_<k>/Picks/<particle>.json
                                           copick picks, centres in Angstrom

  Each type has its own shape (hollow shell, ellipsoid, four lobes, two subunits, dumbbell,
  studded capsid), randomly oriented and non-overlapping, blurred more along z than in-plane,
  in structured plus white noise, with a curved membrane as a distractor.

``nuclei`` (n=24 samples of (24, 48, 48)): a classification set::

    out/<0001..>/raw/z0000.tif ...         uint16, one TIFF per z slice
    out/<0001..>/mask/z0000.tif ...        uint8, 1 inside the nucleus
    out/classes.csv                        sample,class (condensed, granular, speckled)

  Classes are balanced and differ by chromatin texture only: each nucleus' mean intensity
  inside its mask is the same jittered level whatever its class.

``spots`` (n=200 candidates in (32, 128, 128)): a detection-filtering set::

    out/spots.tif                          multi-page uint16, one page per z
    out/spots.csv                          z,y,x,label (true spot, false detection)

  True spots are anisotropic Gaussian PSFs; false ones are irregular blobs, edges or ridges,
  doublets and dim shot-noise peaks, on a Poisson background with slow variations.

The in-memory kernels ``render_tomogram``, ``render_nucleus`` and ``render_spots`` return the
ground truth too (label maps, kinds), for tests and for checking what was written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from streamvol.errors import BadOption
from streamvol.synth._common import Progress
from streamvol.synth._nuclei import (
    CLASSES,
    DEFAULT_SAMPLES,
    Nucleus,
    class_labels,
    nuclei,
    render_nucleus,
)
from streamvol.synth._spots import FALSE_KINDS, Spots, default_candidates, render_spots, spots
from streamvol.synth._tomograms import (
    DEFAULT_RUNS,
    PARTICLES,
    VOXEL_SIZE,
    Particle,
    Tomogram,
    copick_config,
    render_tomogram,
    tomograms,
)

KINDS: tuple[str, ...] = ("tomograms", "nuclei", "spots")

_WRITERS: dict[str, Callable[..., Path]] = {
    "tomograms": tomograms,
    "nuclei": nuclei,
    "spots": spots,
}


def _check_kind(kind: str) -> str:
    if kind not in _WRITERS:
        raise BadOption("kind", kind, f"expected one of {', '.join(KINDS)}")
    return kind


def total_steps(kind: str, n: int | None = None) -> int:
    """How many ``progress(1)`` calls ``make(kind, ..., n=n)`` makes: runs, samples, or 1."""
    _check_kind(kind)
    if kind == "spots":
        return 1
    if n is not None:
        return int(n)
    return DEFAULT_RUNS if kind == "tomograms" else DEFAULT_SAMPLES


def make(
    kind: str,
    out: str | os.PathLike[str],
    *,
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic data set ``kind`` (one of ``KINDS``) to ``out`` and return ``out``.

    ``n`` counts runs (tomograms), samples (nuclei) or candidates (spots); ``size`` is the
    volume's (z, y, x) or an int for a cube; None takes each kind's default.
    """
    writer = _WRITERS[_check_kind(kind)]
    return writer(out, n=n, size=size, seed=seed, overwrite=overwrite, progress=progress)


__all__ = [
    "CLASSES",
    "FALSE_KINDS",
    "KINDS",
    "PARTICLES",
    "VOXEL_SIZE",
    "Nucleus",
    "Particle",
    "Spots",
    "Tomogram",
    "class_labels",
    "copick_config",
    "default_candidates",
    "make",
    "nuclei",
    "render_nucleus",
    "render_spots",
    "render_tomogram",
    "spots",
    "tomograms",
    "total_steps",
]
