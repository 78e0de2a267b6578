"""Writers of prediction outputs: copick picks, ``picks.csv``, OME-Zarr volumes. All atomic.

Copick picks go to ``<root>/overlay/ExperimentRuns/<run>/Picks/<user>_<session>_<type>.json``
(copick's name for a tool's picks, session "0" meaning a tool made them), locations in Angstrom
with x the last axis of the volume, and segmentations to ``.../<run>/Segmentations/<spacing>_
<user>_<session>_<name>[-multilabel].zarr``; ``picks.csv`` has the columns of the CZII submission
(``experiment, particle_type, x, y, z``, Angstrom). Volumes are single-level OME-NGFF 0.4 groups
(zarr v2) with the voxel size in Angstrom, written beside their target and renamed into place.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from streamvol.core.files import write_json_atomic
from streamvol.errors import BadInput
from streamvol.io import PICK_COLUMNS

USER = "streamvol"
SESSION = "0"
_IDENTITY = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]


def picks_path(root: str | Path, run: str, particle: str) -> Path:
    """Where ``write_copick_picks`` puts the picks of ``particle`` in ``run``."""
    picks = Path(root) / "overlay" / "ExperimentRuns" / run / "Picks"
    return picks / f"{USER}_{SESSION}_{particle}.json"


def write_copick_picks(
    root: str | Path,
    run: str,
    particle: str,
    zyx: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    voxel_spacing: float | None = None,
) -> Path:
    """Write (N, 3) z, y, x Angstrom picks of one type in one run as a copick pick file."""
    zyx = np.asarray(zyx, np.float64).reshape(-1, 3)
    points = []
    for i, (z, y, x) in enumerate(zyx):
        point = {
            "location": {"x": float(x), "y": float(y), "z": float(z)},
            "transformation_": _IDENTITY,
            "instance_id": 0,
        }
        if scores is not None:
            point["score"] = float(scores[i])
        points.append(point)
    doc = {
        "pickable_object_name": particle,
        "user_id": USER,
        "session_id": SESSION,
        "run_name": run,
        "voxel_spacing": voxel_spacing,
        "unit": "angstrom",
        "points": points,
        "trust_orientation": False,
    }
    path = picks_path(root, run, particle)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return path


def write_copick_config(
    root: str | Path, radii: Mapping[str, float], weights: Mapping[str, float] | None = None
) -> Path:
    """A ``copick_config.json`` naming the particle types (radius in Angstrom, label 1..P and,
    when known, the score weight), so the output folder is a copick project ``score`` reads."""
    objects = []
    for label, (name, radius) in enumerate(radii.items(), start=1):
        obj: dict = {"name": name, "is_particle": True, "label": label, "radius": float(radius)}
        if weights and name in weights:
            obj["weight"] = float(weights[name])
        objects.append(obj)
    doc = {
        "name": "streamvol-predictions",
        "version": "0.5.0",
        "pickable_objects": objects,
        "overlay_root": "overlay",
    }
    path = Path(root) / "copick_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return path


def write_picks_csv(path: str | Path, rows: Iterable[tuple[str, str, Sequence[float]]]) -> Path:
    """Write ``(experiment, particle_type, (z, y, x) Angstrom)`` rows as the CZII CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PICK_COLUMNS)
        for experiment, particle, (z, y, x) in rows:
            writer.writerow([experiment, particle, f"{x:.3f}", f"{y:.3f}", f"{z:.3f}"])
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def write_copick_segmentation(
    root: str | Path,
    run: str,
    name: str,
    labels: np.ndarray,
    voxel_spacing: float,
    *,
    multilabel: bool,
) -> Path:
    """Write a (z, y, x) label volume of one run as a copick segmentation, ``<root>/overlay/
    ExperimentRuns/<run>/Segmentations/<spacing>_<user>_<session>_<name>[-multilabel].zarr``."""
    folder = Path(root) / "overlay" / "ExperimentRuns" / run / "Segmentations"
    folder.mkdir(parents=True, exist_ok=True)
    kind = "-multilabel" if multilabel else ""
    path = folder / f"{voxel_spacing:.3f}_{USER}_{SESSION}_{name}{kind}.zarr"
    return write_ome_zarr(path, labels, (voxel_spacing,) * 3, name=name)


def write_ome_zarr(
    path: str | Path,
    array: np.ndarray,
    voxel_size: Sequence[float] | None,
    *,
    name: str = "prediction",
    channel_names: Sequence[str] | None = None,
) -> Path:
    """Write a (z, y, x) or (c, z, y, x) array as a one-level OME-NGFF 0.4 group (zarr v2)."""
    import zarr

    path = Path(path)
    if array.ndim not in (3, 4):
        raise BadInput(f"{path}: expected a (z, y, x) or (c, z, y, x) array, got {array.shape}")
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    root = zarr.open_group(str(partial), mode="w", zarr_format=2)
    spatial = array.shape[-3:]
    chunks = (1,) * (array.ndim - 3) + tuple(min(64, s) for s in spatial)
    arr = root.create_array(
        "0",
        shape=array.shape,
        chunks=chunks,
        dtype=array.dtype,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    arr[...] = array
    unit = "angstrom" if voxel_size else None
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
    scale = list(voxel_size) if voxel_size else [1.0, 1.0, 1.0]
    if array.ndim == 4:
        axes = [{"name": "c", "type": "channel"}, *axes]
        scale = [1.0, *scale]
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]
    if channel_names:
        root.attrs["omero"] = {"channels": [{"label": c} for c in channel_names]}
    if path.exists():
        shutil.rmtree(path)
    os.replace(partial, path)
    return path
