"""What decides a shard set: ``ShardConfig`` (checked as it is made, hashed to recognise the set
on a rerun), and ``parse_config`` with the parsers of CLI-style values behind it."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamvol.errors import BadOption
from streamvol.shard.plan import as_zyx
from streamvol.shard.split import parse_fractions

__all__ = ["ShardConfig", "parse_config", "parse_radius", "parse_size", "parse_voxel_size"]

PLANS = ("grid", "points", "sample", "regions")
PADS = ("reflect", "zero", "none")
DTYPES = ("keep", "float16", "uint8")
TASKS = ("auto", "classification", "segmentation", "detection")


@dataclass(frozen=True)
class ShardConfig:
    """Everything that decides the bytes of a shard set (and so its identity on rerun)."""

    sources: tuple[str, ...]
    plan: str = "grid"
    crop: tuple[int, int, int] = (64, 64, 64)
    context: str | int = "auto"
    augment: str = "default"
    max_shift: int = 0
    stride: tuple[int, int, int] | None = None
    negatives: float = 0.0
    pad: str = "reflect"
    dtype: str = "keep"
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    folds: int | None = None
    seed: int = 0
    shard_size: int = 256
    classes: str | None = None
    level: int = 0
    task: str = "auto"
    region_max: int = 1 << 30
    per_point: bool = True
    crops_per_region: int = 0
    voxel_size: tuple[float, float, float] | None = None  # Angstrom; replaces the files' own
    # particle radii in Angstrom, (name, radius) pairs ("*": every type), over a copick config's
    radius: tuple[tuple[str, float], ...] = ()
    # Copick projects: which tomogram of each run, whose picks (any of these owners), and the
    # segmentation that is each run's mask (NAME[:USER_ID[/SESSION_ID]])
    tomogram: str = "denoised"
    voxel_spacing: float | None = None
    user_id: tuple[str, ...] = ()
    session_id: tuple[str, ...] = ()
    segmentation: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("plan", self.plan, PLANS),
            ("pad", self.pad, PADS),
            ("dtype", self.dtype, DTYPES),
            ("task", self.task, TASKS),
        ):
            if value not in allowed:
                raise BadOption(name, value, f"expected one of {', '.join(allowed)}")
        if self.shard_size < 1:
            raise BadOption("shard_size", self.shard_size, "expected a positive count")
        if self.folds is not None and self.folds < 2:
            raise BadOption("folds", self.folds, "expected at least 2 folds")
        if self.negatives < 0:
            raise BadOption(
                "negatives", self.negatives, "expected a ratio >= 0 (background crops per point)"
            )
        if self.region_max < 1:
            raise BadOption("region_max", self.region_max, "expected bytes >= 1")
        if self.crops_per_region < 0:
            raise BadOption("crops_per_region", self.crops_per_region, "expected a count >= 0")
        if not (self.context == "auto" or (isinstance(self.context, int) and self.context >= 0)):
            raise BadOption("context", self.context, "expected 'auto' or a number >= 0")
        if self.voxel_spacing is not None and not (
            math.isfinite(self.voxel_spacing) and self.voxel_spacing > 0
        ):
            raise BadOption(
                "voxel_spacing", self.voxel_spacing, "expected a positive spacing in Angstrom"
            )
        if self.voxel_size is not None and (
            len(self.voxel_size) != 3 or not all(v > 0 for v in self.voxel_size)
        ):
            raise BadOption(
                "voxel_size", self.voxel_size, "expected 3 positive sizes (z, y, x, Angstrom)"
            )

    def margin_for(self, voxel_size: Sequence[float] | None = None) -> tuple[int, int, int]:
        """The stored margin, in voxels a side, on voxels of ``voxel_size`` (the set's; None:
        cubic). ``auto``: what the augmentation the shards are meant for needs (free rotation for
        the ``default`` preset on cubic voxels: ceil(c (sqrt(3) - 1) / 2) a side; rotations turn
        physical space, so anisotropic voxels need less along their long axis), plus
        ``max_shift``; else N."""
        if self.context != "auto":
            return (int(self.context),) * 3
        from streamvol.augment import load_spec

        spec = load_spec(self.augment)
        need = spec.on_voxels(voxel_size).margin(self.crop) if spec is not None else (0, 0, 0)
        return tuple(m + self.max_shift for m in need)  # type: ignore[return-value]

    def digest(self) -> str:
        fields = asdict(self)
        for name, default in _LATER_FIELDS.items():  # at their defaults, as sets made before
            if fields[name] == default:
                del fields[name]
        payload = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


# Fields added after sets were first written: left out of the digest at their defaults, so
# those sets keep their identity.
_LATER_FIELDS = {
    "voxel_size": None,
    "tomogram": "denoised",
    "voxel_spacing": None,
    "user_id": (),
    "session_id": (),
    "segmentation": None,
    "radius": (),
}


def parse_config(
    sources: Sequence[str | Path],
    *,
    crop: str | int | Sequence[int] = 64,
    context: str | int = "auto",
    stride: str | int | Sequence[int] | None = None,
    split: str | Sequence[float] = "0.8,0.1,0.1",
    **options: Any,
) -> ShardConfig:
    """Build a ``ShardConfig`` from CLI-style values (strings like ``"32,64,64"`` allowed)."""
    if isinstance(context, str) and context != "auto":
        try:
            context = int(context)
        except ValueError:
            raise BadOption("context", context, "expected 'auto' or a number") from None
    fractions = parse_fractions(split) if isinstance(split, str) else tuple(split)
    classes = options.pop("classes", None)
    if options.get("voxel_size") is not None:
        options["voxel_size"] = parse_voxel_size(options["voxel_size"])
    if "radius" in options:  # None (the CLI's unset) is no radius, as () is
        radius = options.pop("radius")
        options["radius"] = () if radius in (None, ()) else parse_radius(radius)
    for name in ("user_id", "session_id"):
        if name in options:
            options[name] = tuple(str(v) for v in options[name] or ())
    return ShardConfig(
        sources=tuple(str(Path(s).resolve()) for s in sources),
        crop=as_zyx(crop),
        context=context,
        stride=as_zyx(stride, name="stride") if stride is not None else None,
        split=fractions,
        classes=str(Path(classes).resolve()) if classes else None,
        **options,
    )


def parse_voxel_size(value: str | float | Sequence[float]) -> tuple[float, float, float]:
    """``"10"``, ``10`` or ``"20,10,10"`` (z, y, x) -> a voxel size in Angstrom per axis."""
    try:
        parts = (
            [float(v) for v in value.split(",")]
            if isinstance(value, str)
            else [float(v) for v in np.atleast_1d(value)]
        )
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not all(v > 0 and math.isfinite(v) for v in parts):
        raise BadOption(
            "voxel_size",
            value,
            "expected one positive size or z,y,x in Angstrom, e.g. 10 or 20,10,10",
        )
    return (parts[0], parts[1], parts[2])


def parse_radius(
    value: str | float | dict[str, float] | Sequence[tuple[str, float]],
) -> tuple[tuple[str, float], ...]:
    """``"60"`` (every particle type) or ``"ribosome=150,apo-ferritin=60"`` -> (name, Angstrom)
    pairs sorted by name, ``"*"`` naming every type; a dict or pairs are taken as they are."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, (int, float)):
        pairs = [("*", value)]
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        pairs = [tuple(p.rsplit("=", 1)) if "=" in p else ("*", p) for p in parts]
    else:
        pairs = list(value)
    expected = "expected a radius in Angstrom for every type (60) or NAME=R,NAME=R"
    out: dict[str, float] = {}
    for pair in pairs:
        try:
            name, radius = str(pair[0]).strip(), float(pair[1])
        except (ValueError, IndexError, TypeError):
            raise BadOption("radius", value, expected) from None
        if not name or not (math.isfinite(radius) and radius > 0) or name in out:
            raise BadOption("radius", value, expected + " (each name once, radii > 0)")
        out[name] = radius
    if not out or ("*" in out and len(out) > 1):
        raise BadOption("radius", value, expected + " (one number, or names only)")
    return tuple(sorted(out.items()))


def parse_size(text: str | int) -> int:
    """``"500M"``, ``"2G"``, ``"1.5TB"``, ``"8GiB"`` or a plain count -> bytes (k, M, G, T by
    1000; Ki, Mi, Gi, Ti by 1024)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKMGT]i?)?[bB]?\s*", text)
    if not match:
        raise BadOption("max_bytes", text, "expected a size like 500M, 2G or 8GiB")
    number, unit = float(match[1]), match[2] or ""
    power = "kMGT".index(unit[0].replace("K", "k")) + 1 if unit else 0
    return int(number * (1024 if unit.endswith("i") else 1000) ** power)
