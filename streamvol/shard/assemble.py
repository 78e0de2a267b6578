"""The manifest a run writes last: the set's format, geometry, classes, splits with their shard
records, counts, statistics and sources, and the configuration that made it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from streamvol import __version__
from streamvol.shard.config import ShardConfig
from streamvol.shard.manifest import CHECKSUM, FORMAT, VERSION
from streamvol.shard.plan import Crop
from streamvol.shard.regions import Tile
from streamvol.shard.sources import Prepared, plan_items
from streamvol.shard.write import ShardRecord

__all__ = ["build_manifest"]


def build_manifest(
    config: ShardConfig,
    prepared: Prepared,
    splits: dict[str, list[Crop]],
    jobs: list[tuple[str, list[Crop]]],
    records: dict[str, ShardRecord],
    command: str | None,
    split_warnings: list[str],
) -> dict[str, Any]:
    """The manifest of a finished run (``jobs`` all in ``records``), as ``manifest.json``
    holds it; ``split_warnings``: what ``jobs.split_items`` had to fall back on."""
    names = prepared.plan.class_names
    voxel_size = prepared.voxel_size
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    for name, _ in jobs:
        by_split[name.rsplit("-", 1)[0]].append(records[name].to_json())
    counts = {
        split: {
            names[k] if 0 <= k < len(names) else "unlabelled": v
            for k, v in sorted(Counter(_labels(items)).items())
        }
        for split, items in splits.items()
    }
    stored = tuple(c + 2 * m for c, m in zip(config.crop, prepared.margin, strict=True))
    out_dtype = (
        str(next(iter(prepared.sources.values())).image.dtype)
        if config.dtype == "keep"
        else config.dtype
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "checksum": CHECKSUM,
        "streamvol_version": __version__,
        "task": prepared.task,
        "crop": list(config.crop),
        "margin": list(prepared.margin),
        "stored_shape": list(stored),
        "max_shift": config.max_shift,
        "pad": config.pad,
        "dtype": out_dtype,
        "voxel_size": list(voxel_size) if voxel_size else None,
        "class_names": list(names),
        **_radii(prepared.radii, voxel_size),
        # score weights a copick config gives: validation's weighted F-beta, as `score` reads them
        **({"particle_weights": dict(prepared.weights)} if prepared.weights else {}),
        "members": _members(prepared),
        "plan": {
            "kind": config.plan,
            "stride": list(config.stride) if config.stride else None,
            "negatives": config.negatives,
            "warnings": list(getattr(prepared.plan, "warnings", ())),
            **(_region_settings(config, prepared.plan) if config.plan == "regions" else {}),
        },
        "seed": config.seed,
        "split": {
            **({"folds": config.folds} if config.folds else {"fractions": list(config.split)}),
            "warnings": split_warnings,
        },
        "splits": by_split,
        "counts": {
            split: sum(sum(r.get("units") or [r["count"]]) for r in shards)
            for split, shards in by_split.items()
        },
        "class_counts": counts,
        **_mask_labels(prepared, [records[name] for name, _ in jobs]),
        "stats": prepared.stats,
        "sources": prepared.source_meta,
        "command": command or f"streamvol.shard.shard({config!r})",
        "config": asdict(config),
        "config_sha256": config.digest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _labels(items: Sequence[Crop] | Sequence[Tile]) -> list[int]:
    """The class of every sample an epoch yields: each crop's, or each region's units'."""
    return [k for t in items for k in (t.unit_labels() if isinstance(t, Tile) else [t.label])]


def _region_settings(config: ShardConfig, plan: Any) -> dict[str, Any]:
    """What the loader needs to draw a region set's crops (``streamvol.stream.draw``)."""
    return {
        "per_point": config.per_point,
        "crops_per_region": config.crops_per_region,
        "max_shift": config.max_shift,
        "region_max": config.region_max,
        "regions": len(plan.tiles),
        # tiles have interior sides, where a crop may not reach past the stored margin
        "tiled": any(t.start != (0, 0, 0) or t.stop != t.volume_shape for t in plan.tiles),
    }


def _radii(radii: dict[str, float], voxel_size: Sequence[float] | None) -> dict[str, Any]:
    """Particle radii for detection targets: Angstrom (copick config) and voxels of the stored
    array (the mean voxel size; None when the sources' voxel sizes differ or are unknown)."""
    if not radii:
        return {}
    mean = float(np.mean(voxel_size)) if voxel_size else None
    return {
        "radii_angstrom": dict(radii),
        "radii_voxels": {n: r / mean for n, r in radii.items()} if mean else None,
    }


def _mask_labels(prepared: Prepared, records: Sequence[ShardRecord]) -> dict[str, Any]:
    """The lowest and highest label of the set's masks, which tell the trainer whether they
    are binary (None where a shard's record does not say: one resumed from an older run), and
    the class of each label where the sources name them (copick segmentations)."""
    if not any(s.mask is not None for s in prepared.sources.values()):
        return {}
    names = {"mask_names": list(prepared.mask_names)} if prepared.mask_names else {}
    ranges = [r.mask_range for r in records if r.count]
    if not ranges or None in ranges:
        return {"mask_range": None, **names}
    low, high = min(lo for lo, _ in ranges), max(hi for _, hi in ranges)  # type: ignore[misc]
    return {"mask_range": [low, high], **names}


def _members(prepared: Prepared) -> list[str]:
    members = ["image.npy", "json"]
    if any(s.mask is not None for s in prepared.sources.values()):
        members.append("mask.npy")
    if any(s.points is not None for s in prepared.sources.values()):
        members.append("points.npy")
    if any(c.label >= 0 for c in plan_items(prepared.plan)):
        members.append("cls")
    return members
