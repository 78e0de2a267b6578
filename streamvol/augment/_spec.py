"""``Augment``: what augmentation to draw, as a frozen, picklable spec of steps.

Each step is a small frozen dataclass with its magnitudes and a probability ``p``; a step at its
neutral magnitude does nothing whatever ``p`` is. The spec knows the context margin it needs
(``Augment.margin``), builds from presets, TOML/YAML files and CLI-like options, and hands
sampling to ``sample_params`` (the spec never touches data).

Conventions: axes are (z, y, x) voxels; rotation and zoom turn physical space when the spec
knows the voxel size (``Augment.on_voxels``: a shard set's, so anisotropic voxels are not
sheared), else the voxel grid; shifts and elastic magnitudes are in voxels; intensities are in
normalised units (after ``(v - offset) * scale``); ``scale`` > 1 magnifies the content (reads a
smaller region, like TorchIO's and MONAI's zoom), < 1 shrinks it (reads a region 1/scale
larger, so it needs margin).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamvol.core.geometry import as_zyx, rotation_margin
from streamvol.errors import BadInput, BadOption

if TYPE_CHECKING:
    import numpy as np

    from streamvol.augment._params import AugmentParams

__all__ = [
    "Augment",
    "Blur",
    "Brightness",
    "Contrast",
    "Cutmix",
    "Elastic",
    "Flip",
    "Gamma",
    "Mixup",
    "Noise",
    "Rotate",
    "Scale",
    "Shift",
]

ROTATE_MODES = ("none", "free", "z", "90")


def _bad(where: str, expected: str, got: object) -> BadOption:
    """A step's field out of range, named as ``step.field`` (``rotate.max_angle=400: ...``)."""
    return BadOption(where, got, f"expected {expected}")


def _number(where: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, "a number", value)
    v = float(value)
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise _bad(where, "a finite number" + bounds, value)
    return v


def _p(where: str, value: object) -> float:
    return _number(where, value, 0.0, 1.0)


def _range(where: str, value: object, lo: float | None = None) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise _bad(where, "a [low, high] pair", value)
    a, b = (_number(where, v, lo) for v in value)
    if a > b:
        raise _bad(where, "low <= high", value)
    return a, b


def _per_axis(where: str, value: object, lo: float | None = None, hi: float | None = None):
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value, value)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
        raise _bad(where, "a number or a (z, y, x) triple", value)
    return tuple(_number(where, v, lo, hi) for v in value)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True)
class Rotate:
    """Rotation about the crop centre. ``mode``: "none"; "free" (any axis: a uniformly random
    axis and an angle uniform in [-max_angle, max_angle], or a uniform random rotation when
    max_angle >= 180); "z" (about the z axis by up to max_angle, the axis tilted by up to
    ``max_tilt`` toward a random horizontal direction); "90" (one of the 24 rotations of the cube
    that keep the output shape; max_angle is ignored)."""

    mode: str = "none"
    max_angle: float = 180.0
    max_tilt: float = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ROTATE_MODES:
            raise _bad("rotate.mode", f"one of {', '.join(map(repr, ROTATE_MODES))}", self.mode)
        _set(self, "max_angle", _number("rotate.max_angle", self.max_angle, 0.0, 180.0))
        _set(self, "max_tilt", _number("rotate.max_tilt", self.max_tilt, 0.0, 90.0))
        if self.max_tilt and self.mode != "z":
            raise _bad("rotate.max_tilt", "0 unless mode is 'z'", self.max_tilt)
        _set(self, "p", _p("rotate.p", self.p))


@dataclass(frozen=True, slots=True)
class Flip:
    """Mirror each axis (z, y, x) with its own probability."""

    p: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        _set(self, "p", _per_axis("flip.p", self.p, 0.0, 1.0))


@dataclass(frozen=True, slots=True)
class Shift:
    """Translation, uniform in [-max, max] voxels per axis: the output centre reads the stored
    block at its centre plus the shift."""

    max: tuple[float, float, float] = (0.0, 0.0, 0.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "max", _per_axis("shift.max", self.max, 0.0))
        _set(self, "p", _p("shift.p", self.p))


@dataclass(frozen=True, slots=True)
class Scale:
    """Isotropic zoom factor, uniform in ``range``; > 1 magnifies."""

    range: tuple[float, float] = (1.0, 1.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = _range("scale.range", self.range, 0.0)
        if lo <= 0:
            raise _bad("scale.range", "factors > 0", self.range)
        _set(self, "range", (lo, hi))
        _set(self, "p", _p("scale.p", self.p))


@dataclass(frozen=True, slots=True)
class Elastic:
    """Smooth deformation: displacements uniform in [-magnitude, magnitude] voxels per axis at a
    ``grid``^3 lattice of control points spanning the output, trilinear in between."""

    magnitude: float = 0.0
    grid: int = 4
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "magnitude", _number("elastic.magnitude", self.magnitude, 0.0))
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise _bad("elastic.grid", "an int >= 2", self.grid)
        _set(self, "p", _p("elastic.p", self.p))


@dataclass(frozen=True, slots=True)
class Gamma:
    """``r ** gamma`` on the sample's min-max range (see ``apply_cpu``), gamma uniform in range."""

    range: tuple[float, float] = (1.0, 1.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = _range("gamma.range", self.range, 0.0)
        if lo <= 0:
            raise _bad("gamma.range", "exponents > 0", self.range)
        _set(self, "range", (lo, hi))
        _set(self, "p", _p("gamma.p", self.p))


@dataclass(frozen=True, slots=True)
class Contrast:
    """Multiply the deviation from the sample's mean by a factor uniform in ``range``."""

    range: tuple[float, float] = (1.0, 1.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "range", _range("contrast.range", self.range, 0.0))
        _set(self, "p", _p("contrast.p", self.p))


@dataclass(frozen=True, slots=True)
class Brightness:
    """Add an offset uniform in ``range`` (normalised units)."""

    range: tuple[float, float] = (0.0, 0.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "range", _range("brightness.range", self.range))
        _set(self, "p", _p("brightness.p", self.p))


@dataclass(frozen=True, slots=True)
class Noise:
    """Additive Gaussian noise, its standard deviation uniform in ``std`` (normalised units)."""

    std: tuple[float, float] = (0.0, 0.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "std", _range("noise.std", self.std, 0.0))
        _set(self, "p", _p("noise.p", self.p))


@dataclass(frozen=True, slots=True)
class Blur:
    """Gaussian blur, sigma (voxels) uniform in ``sigma``."""

    sigma: tuple[float, float] = (0.0, 0.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "sigma", _range("blur.sigma", self.sigma, 0.0))
        if self.sigma[1] > 8.0:
            raise _bad("blur.sigma", "sigmas <= 8 voxels", self.sigma)
        _set(self, "p", _p("blur.p", self.p))


@dataclass(frozen=True, slots=True)
class Mixup:
    """Batch level: blend each sample with another, weight ~ Beta(alpha, alpha); 0 is off."""

    alpha: float = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "alpha", _number("mixup.alpha", self.alpha, 0.0))
        _set(self, "p", _p("mixup.p", self.p))


@dataclass(frozen=True, slots=True)
class Cutmix:
    """Batch level: paste a 3D box of another sample, its volume fraction ~ Beta(alpha, alpha)."""

    alpha: float = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "alpha", _number("cutmix.alpha", self.alpha, 0.0))
        _set(self, "p", _p("cutmix.p", self.p))


_STEPS: dict[str, type] = {
    "rotate": Rotate,
    "flip": Flip,
    "shift": Shift,
    "scale": Scale,
    "elastic": Elastic,
    "gamma": Gamma,
    "contrast": Contrast,
    "brightness": Brightness,
    "noise": Noise,
    "blur": Blur,
    "mixup": Mixup,
    "cutmix": Cutmix,
}
# the field a bare option sets: from_options(noise=(0, 0.1)) is noise.std
_PRIMARY = {
    "rotate": "mode",
    "flip": "p",
    "shift": "max",
    "scale": "range",
    "elastic": "magnitude",
    "gamma": "range",
    "contrast": "range",
    "brightness": "range",
    "noise": "std",
    "blur": "sigma",
    "mixup": "alpha",
    "cutmix": "alpha",
}


@dataclass(frozen=True, slots=True)
class Augment:
    """The augmentation spec: geometric steps (one matrix), intensity steps, batch mixing."""

    rotate: Rotate = field(default_factory=Rotate)
    flip: Flip = field(default_factory=Flip)
    shift: Shift = field(default_factory=Shift)
    scale: Scale = field(default_factory=Scale)
    elastic: Elastic = field(default_factory=Elastic)
    gamma: Gamma = field(default_factory=Gamma)
    contrast: Contrast = field(default_factory=Contrast)
    brightness: Brightness = field(default_factory=Brightness)
    noise: Noise = field(default_factory=Noise)
    blur: Blur = field(default_factory=Blur)
    mixup: Mixup = field(default_factory=Mixup)
    cutmix: Cutmix = field(default_factory=Cutmix)
    # (z, y, x) voxel size over its smallest axis; None: cubic voxels. Set by ``on_voxels``.
    aspect: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for name, kind in _STEPS.items():
            if not isinstance(getattr(self, name), kind):
                raise _bad(name, f"a {kind.__name__}", getattr(self, name))
        if self.aspect is not None and (
            len(self.aspect) != 3 or not all(math.isfinite(a) and a >= 1 for a in self.aspect)
        ):
            raise _bad("aspect", "3 voxel size ratios >= 1 (see on_voxels)", self.aspect)

    def on_voxels(self, voxel_size: Sequence[float] | None) -> Augment:
        """This spec on voxels of ``voxel_size`` (z, y, x, any unit; a shard set's): rotation
        and zoom then turn physical space, as TorchIO's do, so a 3:1 z voxel is not sheared
        into the plane, and ``margin`` counts that grid's voxels. Cubic voxels, or None (an
        unknown size), give the spec on the voxel grid."""
        if voxel_size is None:
            return replace(self, aspect=None)
        size = [float(v) for v in voxel_size]
        if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
            raise _bad("voxel_size", "3 positive sizes (z, y, x)", voxel_size)
        aspect = tuple(v / min(size) for v in size)
        return replace(self, aspect=None if max(aspect) == 1.0 else aspect)  # type: ignore[arg-type]

    # --- constructors ----------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> Augment:
        """``none``; ``flips`` (flips and 90-degree rotations, margin 0); ``default`` (free
        rotation, flips, shift 2, scale 0.9-1.1, gamma, contrast, noise); ``cryoet`` (rotation
        about z with a 10-degree tilt, flips, noise, contrast)."""
        half = Flip(p=(0.5, 0.5, 0.5))
        presets = {
            "none": cls(),
            "flips": cls(rotate=Rotate(mode="90"), flip=half),
            "default": cls(
                rotate=Rotate(mode="free", max_angle=180.0),
                flip=half,
                shift=Shift(max=(2.0, 2.0, 2.0)),
                scale=Scale(range=(0.9, 1.1)),
                gamma=Gamma(range=(0.7, 1.5), p=0.3),
                contrast=Contrast(range=(0.75, 1.25), p=0.5),
                noise=Noise(std=(0.0, 0.1), p=0.5),
            ),
            "cryoet": cls(
                rotate=Rotate(mode="z", max_angle=180.0, max_tilt=10.0),
                flip=half,
                noise=Noise(std=(0.0, 0.2), p=0.5),
                contrast=Contrast(range=(0.75, 1.25), p=0.5),
            ),
        }
        if name not in presets:
            raise _bad("preset", f"one of {', '.join(map(repr, presets))}", name)
        return presets[name]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, where: str = "") -> Augment:
        """Build from nested plain data: an optional ``preset`` name, then one table per step
        overriding that preset's fields, e.g. ``{"preset": "cryoet", "noise": {"std": [0, .3]}}``.
        Unknown keys raise ``BadInput`` naming them."""
        at = f"{where}: " if where else ""
        unknown = sorted(set(spec) - set(_STEPS) - {"preset"})
        if unknown:
            raise BadInput(
                f"{at}unknown augment keys {unknown}; expected 'preset' or steps {list(_STEPS)}"
            )
        base = cls.preset(spec.get("preset", "none"))
        changes: dict[str, Any] = {}
        for name, table in spec.items():
            if name == "preset":
                continue
            if not isinstance(table, Mapping):
                raise BadInput(f"{at}augment {name}: expected a table of fields, got {table!r}")
            names = {f.name for f in fields(_STEPS[name])}
            bad = sorted(set(table) - names)
            if bad:
                keys = [f"{name}.{k}" for k in bad]
                raise BadInput(f"{at}unknown augment keys {keys}; {name} has {sorted(names)}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
            try:
                changes[name] = replace(getattr(base, name), **values)
            except BadOption as exc:
                if at:
                    raise BadInput(f"{at}{exc}") from None
                raise
        return replace(base, **changes)

    @classmethod
    def from_file(cls, path: str | Path) -> Augment:
        """Read a TOML file (or YAML when PyYAML is installed) in the ``from_dict`` layout."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise BadInput(f"{path}: reading YAML needs PyYAML; use TOML instead") from None
            data = yaml.safe_load(text) or {}
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise BadInput(f"{path}: not valid TOML: {exc}") from None
        if not isinstance(data, Mapping):
            raise BadInput(f"{path}: expected a table of augment steps, got {type(data).__name__}")
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_options(cls, preset: str | None = None, **options: Any) -> Augment:
        """Build from flat CLI-like options over a preset: ``step_field=value`` (``noise_p=0.5``,
        ``rotate_max_angle=30``) or ``step=value`` for its main field (``rotate="z"``,
        ``noise="0,0.1"``, ``flip="zyx"``: those axes with p 0.5). Text values such as "0,0.1"
        are parsed; None values are ignored (unset CLI flags)."""
        spec: dict[str, Any] = {"preset": preset or "none"}
        unknown = []
        for key, value in options.items():
            if value is None:
                continue
            step, _, name = key.partition("_")
            if step not in _STEPS:
                unknown.append(key)
                continue
            name = name or _PRIMARY[step]
            if name not in {f.name for f in fields(_STEPS[step])}:
                unknown.append(key)
                continue
            if step == "flip" and name == "p" and isinstance(value, str):
                value = _flip_axes(value)
            spec.setdefault(step, {})[name] = _parse(value)
        if unknown:
            raise BadInput(f"unknown augment options {sorted(unknown)}")
        return cls.from_dict(spec)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data (``from_dict`` reads it back): for manifests, checkpoints, logs."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _STEPS}

    # --- what it needs and what it draws ---------------------------------------------------

    def margin(self, crop: int | str | Sequence[int]) -> tuple[int, int, int]:
        """The context margin (z, y, x voxels a side) a stored block needs so every output voxel
        of a ``crop``-sized output reads from inside it: rotation, zoom-out, shift and elastic."""
        size = as_zyx(crop)
        extra = tuple(
            math.ceil(s) + math.ceil(self.elastic.magnitude if self.elastic.p > 0 else 0.0)
            for s in (self.shift.max if self.shift.p > 0 else (0.0, 0.0, 0.0))
        )
        lo = self.scale.range[0] if self.scale.p > 0 else 1.0
        grow = max(1.0, 1.0 / lo)
        rotate = self.rotate if self.rotate.p > 0 else Rotate()
        if rotate.mode == "free" and grow == 1.0 and self.aspect is None:
            return rotation_margin(size, extra)  # DESIGN.md's sphere margin, exactly
        aspect = self.aspect or (1.0, 1.0, 1.0)
        reach = _reach(rotate, [s / 2 * a for s, a in zip(size, aspect, strict=True)])  # physical
        return tuple(  # type: ignore[return-value]
            max(0, math.ceil(r * grow / a - s / 2 - 1e-9)) + e
            for r, a, s, e in zip(reach, aspect, size, extra, strict=True)
        )

    def margin_shortfall(
        self, crop: int | str | Sequence[int], margin: Sequence[int]
    ) -> tuple[int, int, int] | None:
        """The margin this spec needs when a stored ``margin`` is too small for it, else None."""
        need = self.margin(crop)
        return need if any(n > h for n, h in zip(need, margin, strict=True)) else None

    def sample(
        self,
        rng: np.random.Generator,
        stored_shape: Sequence[int],
        out_shape: Sequence[int],
    ) -> AugmentParams:
        """Draw one sample's parameters (see ``sample_params``)."""
        from streamvol.augment._sample import sample_params

        return sample_params(self, rng, stored_shape, out_shape)


def _reach(rotate: Rotate, half: Sequence[float]) -> tuple[float, float, float]:
    """Per axis, how far from the centre a rotated half-size box ``half`` can reach."""
    hz, hy, hx = half
    radius = math.sqrt(hz * hz + hy * hy + hx * hx)
    if rotate.mode == "free":
        return radius, radius, radius
    if rotate.mode == "z":
        rxy = math.hypot(hy, hx)
        t = math.radians(rotate.max_angle)
        # extent along y of the (hy, hx) rectangle turned by up to t: peaks at atan2(hx, hy)
        ey = rxy if t >= math.atan2(hx, hy) else hy * math.cos(t) + hx * math.sin(t)
        ex = rxy if t >= math.atan2(hy, hx) else hx * math.cos(t) + hy * math.sin(t)
        tilt = math.sin(math.radians(rotate.max_tilt))
        if tilt > 0:  # a tilt shrinks part of the in-plane vector, which can lengthen y or x
            ey = ex = rxy
        return (
            min(hz + rxy * tilt, radius),
            min(ey + hz * tilt, radius),
            min(ex + hz * tilt, radius),
        )
    return hz, hy, hx  # none, or 90-degree turns that only swap equal axes


def _flip_axes(text: str) -> tuple[float, float, float]:
    text = text.strip().lower()
    if text in ("", "none"):
        return (0.0, 0.0, 0.0)
    if set(text) - set("zyx"):
        raise _bad("flip", "axes letters from 'zyx' (or 'none')", text)
    return tuple(0.5 if a in text else 0.0 for a in "zyx")  # type: ignore[return-value]


def _parse(value: Any) -> Any:
    """CLI text to plain values: "0.1" -> 0.1, "0,0.1" -> (0.0, 0.1), "free" stays text."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) if p.lstrip("+-").isdigit() else float(p) for p in parts]
    except ValueError:
        return value
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def load_spec(name: str | Path) -> Augment | None:
    """A spec by preset name (``none``, ``flips``, ``default``, ``cryoet``) or from a TOML/YAML
    file; None for ``none``, so callers can skip augmentation entirely."""
    if str(name) in ("none", ""):
        return None
    if Path(name).suffix.lower() in (".toml", ".yaml", ".yml"):
        return Augment.from_file(name)
    try:
        return Augment.preset(str(name))
    except BadOption as exc:
        raise BadOption("augment", str(name), f"{exc.expected}, or a .toml/.yaml file") from None
