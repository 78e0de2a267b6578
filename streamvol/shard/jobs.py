"""From a plan to the jobs of a run: the splits (or folds), the shards of each, and whether
their bytes fit (``check_room``, before the first one is written)."""

from __future__ import annotations

import math
import shutil
import tarfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamvol.errors import LargeOutputWarning, NotEnoughSpace
from streamvol.shard.config import ShardConfig
from streamvol.shard.manifest import is_url
from streamvol.shard.plan import Crop
from streamvol.shard.regions import Tile
from streamvol.shard.sources import Prepared
from streamvol.shard.split import SplitWarning, fold_crops, split_crops

__all__ = ["assign_shards", "check_room", "split_items"]

GROWTH_WARNED = 32  # shards storing more times their sources' voxels than this are warned of


def split_items(
    items: Sequence[Crop] | Sequence[Tile],
    config: ShardConfig,
    class_names: Sequence[str] | None = None,
) -> tuple[dict[str, list[Any]], list[str]]:
    """The splits (or folds), and what they cost, warned (``SplitWarning``) and returned for the
    manifest: a grouping that had to fall back, a class that training never sees (when the
    crops' classes are what a model learns: ``class_names``). Regions are dealt as stand-in
    crops (source, start, class)."""
    tiles = {t.key: t for t in items if isinstance(t, Tile)}
    crops = [t.as_crop() for t in items] if tiles else list(items)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SplitWarning)
        if config.folds:
            splits = fold_crops(crops, config.folds, seed=config.seed)
        else:
            splits = split_crops(crops, config.split, seed=config.seed)
    messages = [str(w.message) for w in caught if issubclass(w.category, SplitWarning)]
    if class_names is not None:
        messages += _classes_not_trained(splits, class_names)
    for message in messages:
        warnings.warn(message, SplitWarning, stacklevel=3)
    if tiles:
        splits = {name: [tiles[c.key] for c in part] for name, part in splits.items()}
    return splits, messages


def _classes_not_trained(splits: dict[str, list[Crop]], class_names: Sequence[str]) -> list[str]:
    """Classes that a split holds but its training does not: the train split (or, for folds,
    every other fold) has no crop of them, so a model trained there never sees them."""
    held = {name: {c.label for c in part if c.label >= 0} for name, part in splits.items()}
    every = set().union(*held.values())

    def named(labels: set[int]) -> str:
        return ", ".join(
            repr(class_names[i]) if i < len(class_names) else str(i) for i in sorted(labels)
        )

    if "train" in held:
        missing = every - held["train"]
        where = [name for name in held if held[name] & missing]
        if missing:
            return [
                f"class {named(missing)}: crops in {' and '.join(where)} but none in train, so "
                "a model trained on this set never sees it; add sources that hold it, or give "
                "train a larger --split fraction"
            ]
        return []
    found = []
    for name, labels in held.items():
        alone = labels - set().union(*(held[o] for o in held if o != name))
        if alone:
            found.append(
                f"class {named(alone)}: every crop in {name}, so the run that validates on "
                f"{name} trains without it; add sources that hold it, or ask fewer --folds"
            )
    return found


def assign_shards(
    splits: dict[str, list[Any]], shard_size: int, region_voxels: int
) -> list[tuple[str, list[Any]]]:
    """Shards of ``shard_size`` crops; regions: as many as fit ``region_voxels`` voxels (at
    least one), so big volumes are written in parallel, one task each."""
    jobs = []
    for split, items in splits.items():
        groups: list[list[Any]] = []
        if items and isinstance(items[0], Tile):
            size = 0
            for tile in items:
                voxels = math.prod(tile.shape)
                if not groups or len(groups[-1]) >= shard_size or size + voxels > region_voxels:
                    groups.append([])
                    size = 0
                groups[-1].append(tile)
                size += voxels
        else:
            groups = [items[s : s + shard_size] for s in range(0, len(items), shard_size)]
        for i, group in enumerate(groups):
            jobs.append((f"{split}-{i:06d}.tar", group))
    return jobs


def check_room(
    config: ShardConfig,
    prepared: Prepared,
    jobs: list[tuple[str, list[Any]]],
    out: Path | str,
    max_bytes: int | None,
) -> None:
    """Refuse a run whose output will not fit, before its first byte: at least the stored
    blocks' bytes (crops x block voxels x stored item size, masks at a byte a voxel, plus tar
    headers) against ``max_bytes`` and against the folder ``out``'s free space (tars already
    there count as free: they are kept or replaced; a URL has no free space to ask). A run that
    fits but stores more than ``GROWTH_WARNED`` times its sources' voxels is warned of
    (``LargeOutputWarning``): overlapping blocks that ``--plan regions`` would store once."""
    block = tuple(c + 2 * m for c, m in zip(config.crop, prepared.margin, strict=True))
    voxels = math.prod(block)
    fixed = {"float16": 2, "uint8": 1}.get(config.dtype)
    need = stored = 0
    for _, crops in jobs:
        for crop in crops:
            source = prepared.sources[crop.source]
            item = fixed or source.image.dtype.itemsize
            n = math.prod(crop.shape) if isinstance(crop, Tile) else voxels  # a region: its own
            need += n * (item + (source.mask is not None)) + 3 * 2 * tarfile.BLOCKSIZE
            stored += n
    count = sum(len(c) for _, c in jobs)
    if max_bytes is not None and need > max_bytes:
        raise NotEnoughSpace(
            f"{out}: the plan's {count} crops of {voxels} voxels need at "
            f"least {_size(need)}, more than --max-bytes {_size(max_bytes)}; "
            "use a smaller --crop, --context or --stride, or raise --max-bytes"
        )
    if not is_url(out):
        free = shutil.disk_usage(out).free + sum(p.stat().st_size for p in Path(out).glob("*.tar"))
        if need > free:
            raise NotEnoughSpace(
                f"{out}: the plan's {count} crops of {voxels} voxels need at "
                f"least {_size(need)}, but the disk has {_size(free)} free; "
                "use a smaller --crop, --context or --stride, or another --out"
            )
    source_voxels = sum(math.prod(s.image.shape) for s in prepared.sources.values())
    if stored > GROWTH_WARNED * source_voxels:
        size, stride = ("x".join(map(str, b)) for b in (block, config.stride or config.crop))
        why, fewer = {
            "grid": (f"overlapping blocks of {size} every {stride} voxels", "a larger --stride"),
            "points": (f"overlapping blocks of {size} around nearby points", "a smaller --crop"),
        }.get(config.plan, (f"blocks of {size}", "a smaller --crop"))
        warnings.warn(
            LargeOutputWarning(
                f"{out}: the plan's {count} crops store {stored / source_voxels:.0f}x the voxels "
                f"of its sources ({_size(need)}): {why}; {fewer}, a smaller "
                "--context, or --plan regions (each volume stored once, crop positions drawn "
                "every epoch) store less"
            ),
            stacklevel=3,
        )


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError  # unreachable
