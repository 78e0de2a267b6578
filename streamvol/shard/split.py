"""Grouped, class-stratified train/val/test splits and k folds of a plan's crops.

Crops of one group never land in two splits: by default a group is a source volume, since
neighbouring crops of one volume share voxels and would leak between training and evaluation.
With a single source, the volume is cut into contiguous slabs instead. Whole groups are then
dealt greedily so each split's size and class mix come as close to its target as grouping allows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamvol.errors import BadInput, BadOption, SplitWarning
from streamvol.shard.plan import Crop

__all__ = [
    "SPLIT_NAMES",
    "Grouping",
    "SplitWarning",
    "fold_crops",
    "group_of",
    "parse_fractions",
    "split_crops",
]

SPLIT_NAMES = ("train", "val", "test")
_SLABS_PER_PART = 4


@dataclass(frozen=True)
class Grouping:
    """Which group each crop belongs to, by crop key, and how the groups were made.

    ``by`` is "source", "slab" (one source cut into slabs) or "given"; ``warning`` says what the
    fallback costs, or is None.
    """

    groups: dict[str, str]
    by: str
    warning: str | None = None


def group_of(
    crops: Sequence[Crop], parts: int = 2, groups: Mapping[str, str] | None = None
) -> Grouping:
    """Group crops for ``parts`` splits or folds: by ``groups`` if given, else by source.

    With one source and ``parts > 1`` the crops are cut along the longest extent of their centres
    into about ``4 * parts`` contiguous slabs (at least 2) of near-equal counts; crops with the same
    coordinate on that axis share a slab, so neighbours stay together.
    """
    crops = list(crops)
    keys = [c.key for c in crops]
    names, by, warning = _groups(crops, keys, parts, groups)
    return Grouping(dict(zip(keys, names, strict=True)), by, warning)


def _groups(
    crops: list[Crop], keys: list[str], parts: int, groups: Mapping[str, str] | None
) -> tuple[list[str], str, str | None]:
    """The group of each crop, in input order, and how the groups were made (see group_of)."""
    if groups is not None:
        missing = [k for k in keys if k not in groups]
        if missing:
            raise BadInput(
                f"groups names no group for {len(missing)} crops (first: {missing[:3]}); "
                f"expected a group for every crop key"
            )
        return [str(groups[k]) for k in keys], "given", None
    sources = {c.source for c in crops}
    if len(sources) != 1 or parts < 2:
        return [c.source for c in crops], "source", None
    (source,) = sources
    centres = np.array([c.centre for c in crops], dtype=np.int64)
    axis = int(np.argmax(centres.max(axis=0) - centres.min(axis=0)))
    coord = centres[:, axis]
    wanted = max(2, _SLABS_PER_PART * parts)
    rank = np.searchsorted(np.sort(coord), coord, side="left")  # ties share a rank
    _, slab = np.unique(rank * wanted // len(crops), return_inverse=True)
    n_slabs = int(slab.max()) + 1
    warning = (
        f"only one source ({source!r}): grouped its {len(crops)} crops into {n_slabs} contiguous "
        f"slabs along {'zyx'[axis]} instead of by source, so splits hold different parts of the "
        f"same volume and crops at slab borders may share voxels"
    )
    return [f"{source}/slab{s}" for s in slab.tolist()], "slab", warning


def parse_fractions(text: str, name: str = "split") -> tuple[float, ...]:
    """Parse "0.8,0.1,0.1" (1 to 3 values >= 0, sum > 0) into fractions normalised to sum 1;
    ``name`` is the parameter an error names."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except (AttributeError, ValueError):
        values = ()
    return _normalise(values, text, name)


def _normalise(values: Sequence[float], shown: object, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    total = sum(values)
    if not (
        1 <= len(values) <= len(SPLIT_NAMES)
        and all(math.isfinite(v) and v >= 0 for v in values)
        and total > 0
    ):
        raise BadOption(
            name,
            shown,
            "expected 1 to 3 fractions >= 0 with a positive sum, for train, val, test "
            "(like '0.8,0.1,0.1')",
        )
    return tuple(v / total for v in values)


def split_crops(
    crops: Sequence[Crop],
    fractions: Sequence[float] | str = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[Crop]]:
    """Deal crops into "train", "val", "test" by ``fractions``, whole groups at a time.

    Splits with fraction 0 are left out. Each split keeps the input (plan) order; which split a
    crop lands in depends only on the crops, ``fractions``, ``seed`` and ``groups``, not on input
    order. Warns ``SplitWarning`` when a single source is split by slabs.
    """
    if isinstance(fractions, str):
        normalised = parse_fractions(fractions, "fractions")
    else:
        normalised = _normalise(fractions, fractions, "fractions")
    targets = {name: f for name, f in zip(SPLIT_NAMES, normalised, strict=False) if f > 0}
    return _deal(crops, targets, seed, groups, "splits")


def fold_crops(
    crops: Sequence[Crop],
    k: int,
    *,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[Crop]]:
    """Deal crops into ``k`` folds "fold0".."fold{k-1}" of near-equal size, whole groups at a time.

    Same grouping, stratification and ordering rules as ``split_crops``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise BadOption("k", k, "expected k >= 2 folds")
    targets = {f"fold{i}": 1 / int(k) for i in range(int(k))}
    return _deal(crops, targets, seed, groups, "folds")


def _deal(
    crops: Sequence[Crop],
    targets: dict[str, float],
    seed: int,
    groups: Mapping[str, str] | None,
    what: str,
) -> dict[str, list[Crop]]:
    """Assign whole groups greedily, largest first, where they most reduce the gap to target.

    The gap of a split is sum over classes (and the total) of (count - target)^2 / target, so a
    small split weighs as much as a large one; a group goes where adding it lowers that most.
    """
    crops = list(crops)
    if not crops:
        raise BadInput(f"expected crops to deal into {what}, got none")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise BadOption("seed", seed, "expected an int >= 0")
    keys = [c.key for c in crops]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise BadInput(f"crop key {key!r} appears twice; expected unique keys")
            seen.add(key)
    names = list(targets)
    crop_groups, by, warning = _groups(crops, keys, len(names), groups)
    if warning:
        warnings.warn(warning, SplitWarning, stacklevel=3)
    group_names = sorted(set(crop_groups))
    if len(group_names) < len(names):
        unit = {"source": "source volumes", "slab": "slabs of the one source"}.get(by, "groups")
        raise BadInput(
            f"{len(names)} {what} asked ({', '.join(names)}) but the crops form only "
            f"{len(group_names)} groups ({unit}), and no group may be in two {what}; "
            f"ask for at most {len(group_names)} {what}, or add sources"
        )
    # counts[g, j]: crops of group g in class j; the last column is the group's total
    group_index = {g: i for i, g in enumerate(group_names)}
    classes = sorted({c.label for c in crops})
    class_index = {label: j for j, label in enumerate(classes)}
    counts = np.zeros((len(group_names), len(classes) + 1), np.float64)
    rows = np.array([group_index[g] for g in crop_groups])
    np.add.at(counts, (rows, np.array([class_index[c.label] for c in crops])), 1)
    counts[:, -1] = counts[:, :-1].sum(axis=1)
    share = np.array([targets[n] for n in names])
    target = share[:, None] * counts.sum(axis=0)[None, :]  # (splits, classes + 1), all > 0

    rng = np.random.default_rng(int(seed))
    order = rng.permutation(len(group_names))
    order = order[np.argsort(-counts[order, -1], kind="stable")]  # larger first, ties shuffled
    filled = np.zeros_like(target)
    members = np.zeros(len(names), np.int64)
    split_of_group = np.empty(len(group_names), np.int64)
    for dealt, g in enumerate(order):
        v = counts[g]
        cost = (v * (2 * (filled - target) + v) / target).sum(axis=1)
        empty = members == 0
        if len(order) - dealt <= empty.sum():  # the last groups go to splits still empty
            cost = np.where(empty, cost, np.inf)
        s = int(np.argmin(cost))
        split_of_group[g] = s
        filled[s] += v
        members[s] += 1
    split_of_crop = split_of_group[rows].tolist()
    return {
        name: [c for c, t in zip(crops, split_of_crop, strict=True) if t == s]
        for s, name in enumerate(names)
    }
