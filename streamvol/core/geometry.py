"""Geometry every layer shares: (z, y, x) sizes, the box stored around a crop, the margin a
rotation needs, and which points lie in a box."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from streamvol.errors import BadOption

Zyx = tuple[int, int, int]


def parse_zyx(value: object, what: str, minimum: int | None, name: str = "size") -> Zyx:
    """Read an int, 3 ints, or text "64" / "32,64,64" as (z, y, x) ints of at least ``minimum``;
    else ``BadOption`` naming the parameter ``name``."""
    expected = f"expected {what} as an int, 3 ints, or text like '64' or '32,64,64'"
    if minimum is not None:
        expected += f" (each >= {minimum})"
    if isinstance(value, str):
        parts: list[object] = [p.strip() for p in value.split(",")]
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, Sequence | np.ndarray) and len(value) == 3:
        parts = list(value)
    else:
        raise BadOption(name, value, expected)
    if len(parts) == 1:
        parts = parts * 3
    out = []
    for part in parts:
        is_text = isinstance(part, str) and re.fullmatch(r"[+-]?\d+", part)
        is_int = isinstance(part, int | np.integer) and not isinstance(part, bool)
        if is_text or is_int:
            number = int(part)  # type: ignore[arg-type]
        else:
            raise BadOption(name, value, expected)
        if minimum is not None and number < minimum:
            raise BadOption(name, value, expected)
        out.append(number)
    if len(out) != 3:
        raise BadOption(name, value, expected)
    return out[0], out[1], out[2]


def as_zyx(value: int | str | Sequence[int], name: str = "crop") -> Zyx:
    """Normalise a crop size to (z, y, x) ints > 0: ``64``, ``(32, 64, 64)``, ``"32,64,64"``;
    ``name`` is the parameter an error names."""
    return parse_zyx(value, "a crop size" if name == "crop" else "a size", minimum=1, name=name)


def crop_box(
    centre: Sequence[int], crop: int | str | Sequence[int], margin: int | Sequence[int] = 0
) -> tuple[tuple[int, int], ...]:
    """Per axis ``(start, stop)`` of the block stored for a crop: the crop plus ``margin`` a side.

    ``start = centre - crop // 2 - margin``; the box may reach outside the volume (the writer
    pads).
    """
    if len(centre) != 3:
        raise BadOption("centre", centre, "expected a (z, y, x) centre")
    size = as_zyx(crop)
    extra = parse_zyx(margin, "a margin", minimum=0, name="margin")
    box = []
    for c, s, m in zip(centre, size, extra, strict=True):
        start = int(c) - s // 2 - m
        box.append((start, start + s + 2 * m))
    return tuple(box)


def rotation_margin(crop: int | str | Sequence[int], max_shift: int | Sequence[int] = 0) -> Zyx:
    """Voxels to keep around a crop so any rotation plus a shift up to ``max_shift`` stays inside.

    A box turned by any angle stays inside the sphere through its corners, radius half its
    diagonal; per axis the margin is that radius minus half the crop, rounded up. For a cube of
    side c this is ``ceil(c * (sqrt(3) - 1) / 2)`` (DESIGN.md); a non-cubic crop needs more on its
    short axes, since its long diagonal can turn onto them.
    """
    size = as_zyx(crop)
    shift = parse_zyx(max_shift, "a maximum shift", minimum=0, name="max_shift")
    radius = math.sqrt(sum(s * s for s in size)) / 2
    return tuple(  # type: ignore[return-value]
        math.ceil(radius - s / 2) + t for s, t in zip(size, shift, strict=True)
    )


def inside(points: np.ndarray, start: Sequence[float], stop: Sequence[float]) -> np.ndarray:
    """Which of ``points`` (N, >= 3; z, y, x first) lie in the box of voxels ``[start, stop)``:
    voxel i spans [i - 0.5, i + 0.5), so a point is inside from ``start - 0.5`` to
    ``stop - 0.5`` (exclusive)."""
    zyx = np.asarray(points)[:, :3]
    low = np.asarray(start, dtype=np.float64) - 0.5
    high = np.asarray(stop, dtype=np.float64) - 0.5
    return np.all((zyx >= low) & (zyx < high), axis=1)
