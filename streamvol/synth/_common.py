"""Helpers shared by the synthetic data kinds: sizes, staged writes, rotations, slices."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from streamvol.errors import BadOption, FolderNotEmpty

Progress = Callable[[int], None]
Shape3 = tuple[int, int, int]


def as_shape(
    size: int | Sequence[int] | None, default: Shape3, *, minimum: Shape3, name: str = "size"
) -> Shape3:
    """Turn ``size`` (None, an int for a cube, or z, y, x) into a checked 3-tuple; ``name`` is
    the parameter an error names."""
    if size is None:
        dims: tuple[int, ...] = default
    elif isinstance(size, int | np.integer):
        dims = (int(size),) * 3
    else:
        dims = tuple(int(s) for s in size)
    if len(dims) != 3:
        raise BadOption(name, size, "expected an int or (z, y, x)")
    shape = (dims[0], dims[1], dims[2])
    if any(s < m for s, m in zip(shape, minimum, strict=True)):
        raise BadOption(name, shape, f"expected at least {minimum} (z, y, x)")
    return shape


def check_n(n: int, *, minimum: int = 1) -> int:
    """Validate a count given by the user."""
    if int(n) != n or n < minimum:
        raise BadOption("n", n, f"expected an integer >= {minimum}")
    return int(n)


@contextlib.contextmanager
def staged_output(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``out``; rename it to ``out`` only on success.

    A crash leaves a ``.<name>.<hex>.partial`` folder, never a half-written ``out``.
    ``out`` may be missing or an empty folder; a non-empty one is replaced only with
    ``overwrite=True``.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        if not overwrite and any(out.iterdir()):
            raise FolderNotEmpty(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly over SO(3) (from a normalised Gaussian quaternion)."""
    w, x, y, z = rng.normal(size=4)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def local_grid(
    centre: Sequence[float], half: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The window of ``shape`` within ``half`` voxels of ``centre`` (clipped at the borders).

    Returns the window's slices and the offsets of its voxels from ``centre``, shape
    ``(3, *window)``, so a kernel can be evaluated on the window alone.
    """
    c = np.round(np.asarray(centre)).astype(int)
    lo = np.maximum(c - np.asarray(half), 0)
    hi = np.minimum(c + np.asarray(half) + 1, shape)
    slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    axes = [
        np.arange(a, b, dtype=np.float32) - np.float32(ci)
        for a, b, ci in zip(lo, hi, centre, strict=True)
    ]
    return slices, np.stack(np.meshgrid(*axes, indexing="ij"))


def unit_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]
) -> np.ndarray:
    """Gaussian white noise smoothed by ``sigma`` voxels, rescaled to zero mean, unit std."""
    from scipy import ndimage

    g = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    g -= g.mean()
    g /= g.std() + 1e-12
    return g


def write_slices(folder: Path, volume: np.ndarray) -> None:
    """Write a (z, y, x) array as one TIFF per z slice: ``folder/z0000.tif, z0001.tif, ...``."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(volume.shape[0] - 1)))
    for z, plane in enumerate(volume):
        tifffile.imwrite(folder / f"z{z:0{width}d}.tif", plane)


def advance(progress: Progress | None, steps: int = 1) -> None:
    """Report ``steps`` finished units to ``progress`` when one was given."""
    if progress is not None:
        progress(steps)
