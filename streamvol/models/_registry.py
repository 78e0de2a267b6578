"""The model registry: models by name, built with one signature.

Every registered model is an ``nn.Module`` class whose constructor is keyword-only and takes
``in_channels`` and ``num_classes`` plus its own options, so ``build`` can check the options
against the constructor and name the valid ones when a caller mistypes.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from torch import nn

from streamvol.errors import BadInput, BadOption

M = TypeVar("M", bound=type[nn.Module])

_MODELS: dict[str, type[nn.Module]] = {}
_SHARED = ("in_channels", "num_classes")


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make a model buildable as ``build(name, ...)``."""

    def deco(cls: M) -> M:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        return cls

    return deco


def available() -> tuple[str, ...]:
    """Names of every registered model, sorted."""
    return tuple(sorted(_MODELS))


def options(name: str) -> dict[str, Any]:
    """The options of model ``name`` (beyond ``in_channels``/``num_classes``) and their defaults.

    Options without a default map to ``inspect.Parameter.empty``.
    """
    params = inspect.signature(_lookup(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _SHARED}


@dataclass(frozen=True)
class Option:
    """One option of a model's builder: its name, type (as written), default and, for a
    ``Literal``, the allowed values."""

    name: str
    type: str
    default: Any
    choices: tuple[Any, ...] = ()


def summary(name: str) -> str:
    """The docstring of model ``name``'s class: what it is, its shapes, its options."""
    return inspect.getdoc(_lookup(name)) or name


def describe(name: str) -> list[Option]:
    """Every option of model ``name`` (beyond ``in_channels``/``num_classes``), typed from its
    constructor's signature, in signature order."""
    cls = _lookup(name)
    hints = typing.get_type_hints(cls.__init__)
    out = []
    for key, default in options(name).items():
        hint = hints.get(key, Any)
        out.append(Option(key, _type_name(hint), default, _choices(hint)))
    return out


def parse_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """``["variant=mc3_18", "layers=1,1,1,1"]`` -> ``{"variant": "mc3_18", "layers": (1, 1, 1,
    1)}``, each value converted to the type the builder of ``name`` declares (int, float, bool,
    a ``Literal``'s values, comma lists for sequences, ``none`` for an optional). A malformed
    item, an unknown key or a value of the wrong type raises ``BadOption`` naming it."""
    cls = _lookup(name)
    hints = typing.get_type_hints(cls.__init__)
    known = options(name)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BadOption("model_options", item, "expected KEY=VALUE")
        if key not in known:
            raise BadOption(
                "model_options",
                item,
                f"model {name!r} has no option {key!r}; expected one of {', '.join(known)}",
            )
        try:
            out[key] = _convert(hints.get(key, Any), text.strip())
        except BadInput as exc:
            raise BadOption("model_options", item, str(exc)) from None
    return out


def _convert(hint: Any, text: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        rest = [a for a in args if a is not type(None)]
        return _convert(rest[0] if len(rest) == 1 else Any, text)
    if origin is Literal:
        if text not in [str(a) for a in args]:
            raise BadInput(f"expected one of {', '.join(map(str, args))}")
        return next(a for a in args if str(a) == text)
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        inner = args[0] if args else Any
        return tuple(_convert(inner, part.strip()) for part in text.split(",") if part.strip())
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise BadInput("expected true or false")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise BadInput(f"expected {'an integer' if hint is int else 'a number'}") from None
    return text


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (tuple, list, Sequence, typing.Sequence):
        return f"{_type_name(args[0]) if args else 'value'},..."
    if hint is type(None):
        return "none"
    return getattr(hint, "__name__", str(hint))


def _choices(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return ()


def build(name: str, *, in_channels: int = 1, num_classes: int, **opts: Any) -> nn.Module:
    """Build registered model ``name``.

    ``num_classes`` follows one convention for every classifier: 2 means binary with ONE output
    logit (train with BCE-with-logits), k > 2 means k logits (cross-entropy), 1 means one raw
    output. Segmentation models (``unet3d``, ``vit3d`` with ``task="segment"``) output exactly
    ``num_classes`` channels per voxel (use 1 for a BCE mask or a heatmap).
    """
    cls = _lookup(name)
    known = options(name)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise BadOption(
            "model_options",
            {k: opts[k] for k in unknown},
            f"model {name!r}: unknown option(s) {unknown}; expected some of {sorted(known)}",
        )
    return cls(in_channels=in_channels, num_classes=num_classes, **opts)


def _lookup(name: str) -> type[nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise BadOption("model", name, f"expected one of {', '.join(available())}") from None
