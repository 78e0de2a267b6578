"""Transfer learning for any model: load weights safely, freeze features, unfreeze by level."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from streamvol.errors import BadOption, CheckpointError

# Wrappers that prefix every key: torch.compile's OptimizedModule and DistributedDataParallel.
_PREFIXES = ("_orig_mod.", "module.")


class LoadResult(NamedTuple):
    """Keys of the model that the checkpoint lacked, keys of the checkpoint left unused, and
    (``skip_mismatched``) keys both hold with different shapes, left as the model had them."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: tuple[str, ...] = ()


def load_weights(
    model: nn.Module,
    path: str | Path,
    *,
    key: str | None = None,
    strict: bool = True,
    skip_head: bool = False,
    skip_mismatched: bool = False,
) -> LoadResult:
    """Load weights from ``path`` into ``model`` with ``torch.load(weights_only=True)``.

    The file may hold a bare ``state_dict`` or a dict with the weights under ``key`` (by default
    ``"model"`` or ``"state_dict"``, as streamvol's trainer writes). Prefixes left by
    ``torch.compile`` or DDP are stripped. ``skip_head=True`` drops the checkpoint's ``head.*``
    weights, for fine-tuning with a different output layer (use with ``strict=False``);
    ``skip_mismatched=True`` leaves the model's own tensors where the checkpoint's have another
    shape (a classifier's layers sized from another crop, a ViT's extra CLS token), listing them
    in ``mismatched_keys``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = _state_dict_of(obj, key, path)
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    mismatched: list[str] = []
    if skip_mismatched:
        own = model.state_dict()
        mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        state = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(state, strict=strict)
    missing = [k for k in result.missing_keys if k not in mismatched]
    return LoadResult(missing, list(result.unexpected_keys), tuple(mismatched))


def _state_dict_of(obj: Any, key: str | None, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict or a dict of them, got {type(obj)}")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"{path}: expected an entry {key!r}, found {sorted(obj)}")
        obj = obj[key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = [k for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping)]
        if not found:
            raise CheckpointError(
                f"{path}: expected a state_dict or a 'model'/'state_dict' entry, "
                f"found {sorted(obj)}"
            )
        obj = obj[found[0]]
    state = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        state[k] = v
    return state


def _levels(model: nn.Module) -> nn.Sequential:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise TypeError(
            f"{type(model).__name__}: expected a `features` nn.Sequential of levels "
            f"(simple_cnn, se_resnet3d, vgg3d, resnet3d have one), got {type(features).__name__}"
        )
    return features


def feature_levels(model: nn.Module) -> int:
    """How many levels ``model.features`` holds (0 for a model without them)."""
    features = getattr(model, "features", None)
    return len(features) if isinstance(features, nn.Sequential) else 0


def freeze_features(model: nn.Module, trainable_levels: int = 0) -> int:
    """Freeze ``model.features`` except its last ``trainable_levels`` levels; return how many
    levels are trainable.

    Only ``requires_grad`` changes; BatchNorm running statistics of frozen levels still update
    in ``train()`` mode unless the caller puts those levels in ``eval()``.
    """
    levels = _levels(model)
    if trainable_levels < 0:
        raise BadOption("trainable_levels", trainable_levels, "expected an int >= 0")
    n = min(trainable_levels, len(levels))
    for i, level in enumerate(levels):
        level.requires_grad_(i >= len(levels) - n)
    return n


def unfreeze_schedule(model: nn.Module, epoch: int, every: int) -> int:
    """Progressive unfreezing: at ``epoch`` (from 0), the deepest ``epoch // every`` levels of
    ``model.features`` are trainable, the rest frozen; the head and classifier stay trainable.

    Depends only on ``epoch``, so a resumed run gets the same state. Build the optimizer over
    all parameters: frozen ones get no gradient and optimizers skip them. Returns the number of
    trainable levels.
    """
    if every < 1:
        raise BadOption("every", every, "expected an int >= 1")
    if epoch < 0:
        raise BadOption("epoch", epoch, "expected an int >= 0")
    return freeze_features(model, epoch // every)
