"""Test-time augmentation of crops: the model sees each crop turned and mirrored, and the
predictions, mapped back, are averaged.

Kinds (``--tta`` of ``evaluate``, ``predict`` and ``compare``):

- ``flips``: the 8 combinations of mirroring z, y and x;
- ``rot90z``: the 4 turns by 90 degrees about z (in the y-x plane), the turns that keep an
  anisotropic voxel grid (cryo-ET's missing wedge, light microscopy's longer z PSF) as it is;
- ``all``: both together, the 16 distinct transforms they generate (the 8 symmetries of the
  y-x square, each with and without a z mirror).

Turns about z need a square y-x crop (H == W); otherwise they are refused, naming the crop.
Every transform acts on (B, C, D, H, W) tensors and comes with its inverse, which maps a
per-voxel prediction back onto the original crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from streamvol.errors import BadOption

KINDS = ("none", "flips", "rot90z", "all")

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def parse(value: str | bool | None) -> str | None:
    """``--tta``: ``none`` (or False/None) -> None; True -> ``flips``; else a kind of ``KINDS``
    (``rot90`` is read as ``rot90z``, ``flips,rot90`` as ``all``, as the whole-volume path
    spells them)."""
    if value is None or value is False:
        return None
    if value is True:
        return "flips"
    text = str(value).strip().lower()
    text = {"rot90": "rot90z", "flips,rot90": "all", "rot90,flips": "all", "": "none"}.get(
        text, text
    )
    if text not in KINDS:
        raise BadOption("tta", value, f"expected one of {', '.join(KINDS)}")
    return None if text == "none" else text


def transforms(kind: str | None, shape: Sequence[int]) -> list[Transform]:
    """(forward, inverse) pairs of ``kind`` for crops of spatial ``shape`` (D, H, W), identity
    first; ``[identity]`` when ``kind`` is None."""
    identity: Transform = (_same, _same)
    if kind is None:
        return [identity]
    if kind in ("rot90z", "all") and shape[1] != shape[2]:
        raise BadOption(
            "tta",
            kind,
            f"turns about z need square y-x crops, got {tuple(shape)} (z, y, x); use flips",
        )
    if kind == "flips":
        return [_flips(dims) for dims in _FLIPS]
    if kind == "rot90z":
        return [_turn(k, ()) for k in range(4)]
    return [_turn(k, dims) for k in range(4) for dims in ((), (2,), (3,), (2, 3))]


# The 8 mirror combinations of the axes z, y, x ((B, C, D, H, W) dims 2, 3, 4).
_FLIPS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _flips(dims: tuple[int, ...]) -> Transform:
    if not dims:
        return (_same, _same)
    return (lambda t: t.flip(dims), lambda t: t.flip(dims))


def _turn(k: int, dims: tuple[int, ...]) -> Transform:
    """Mirror ``dims`` then turn ``k`` quarter turns in the y-x plane; the inverse undoes both
    in the opposite order. With dims in {(), z, y, z+y} and k in 0..3 these are the 16 distinct
    transforms: the y mirror with the turns gives the x mirror and the diagonal ones."""

    def forward(t: torch.Tensor) -> torch.Tensor:
        t = t.flip(dims) if dims else t
        return torch.rot90(t, k, dims=(3, 4)) if k else t

    def inverse(t: torch.Tensor) -> torch.Tensor:
        t = torch.rot90(t, -k, dims=(3, 4)) if k else t
        return t.flip(dims) if dims else t

    return (forward, inverse)
