"""The model registry: models by name, built with one signature.

Every registered model is an ``nn.Module`` class whose constructor is keyword-only and takes
``in_channels`` and ``num_classes`` plus its own options, so ``build`` can check the options
against the constructor and name the valid ones when a caller mistypes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

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
        raise ValueError(
            f"model {name!r}: unknown option(s) {unknown}; expected some of {sorted(known)}"
        )
    return cls(in_channels=in_channels, num_classes=num_classes, **opts)


def _lookup(name: str) -> type[nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(available())}"
        ) from None
