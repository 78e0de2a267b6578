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


def copick_segmentation_path(
    root: str | Path, run: str, name: str, voxel_spacing: float, *, multilabel: bool
) -> Path:
    """Where a run's segmentation goes in a copick project: ``<root>/overlay/ExperimentRuns/
    <run>/Segmentations/<spacing>_<user>_<session>_<name>[-multilabel].zarr``."""
    folder = Path(root) / "overlay" / "ExperimentRuns" / run / "Segmentations"
    kind = "-multilabel" if multilabel else ""
    return folder / f"{voxel_spacing:.3f}_{USER}_{SESSION}_{name}{kind}.zarr"


def write_copick_segmentation(
    root: str | Path,
    run: str,
    name: str,
    labels: np.ndarray,
    voxel_spacing: float,
    *,
    multilabel: bool,
) -> Path:
    """Write a (z, y, x) label volume of one run as a copick segmentation
    (``copick_segmentation_path``)."""
    path = copick_segmentation_path(root, run, name, voxel_spacing, multilabel=multilabel)
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
    with OmeZarrWriter(
        path, array.shape, array.dtype, voxel_size, name=name, channel_names=channel_names
    ) as writer:
        writer.write(0, array)
    return writer.path


class OmeZarrWriter:
    """A (z, y, x) or (c, z, y, x) one-level OME-NGFF 0.4 group (zarr v2) written block of
    planes by block of planes, in z order (``write(z0, block)``), so a volume larger than
    memory can be written as it is computed. Planes wait in a buffer of one chunk's depth until
    its row of chunks is whole, so each chunk is compressed and stored once, never read back.
    The group is built beside ``path`` and renamed into place when the ``with`` block ends
    without an error, every plane written; otherwise the partial group is removed and whatever
    was at ``path`` is kept."""

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        dtype: np.dtype | type,
        voxel_size: Sequence[float] | None,
        *,
        name: str = "prediction",
        channel_names: Sequence[str] | None = None,
    ) -> None:
        import zarr

        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (3, 4):
            raise BadInput(
                f"{self.path}: expected a (z, y, x) or (c, z, y, x) array, got {self.shape}"
            )
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.root = zarr.open_group(str(self.partial), mode="w", zarr_format=2)
        channels = len(self.shape) - 3
        self.array = self.root.create_array(
            "0",
            shape=self.shape,
            chunks=(1,) * channels + tuple(min(64, s) for s in self.shape[-3:]),
            dtype=dtype,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        unit = "angstrom" if voxel_size else None
        axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
        scale = list(voxel_size) if voxel_size else [1.0, 1.0, 1.0]
        if channels:
            axes = [{"name": "c", "type": "channel"}, *axes]
            scale = [1.0, *scale]
        self.attrs: dict = {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": name,
                    "axes": axes,
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [{"type": "scale", "scale": scale}],
                        }
                    ],
                }
            ]
        }
        if channel_names:
            self.attrs["omero"] = {"channels": [{"label": c} for c in channel_names]}
        self.buffer: np.ndarray | None = None  # planes until their row of chunks is whole
        self.next = 0

    def write(self, z0: int, block: np.ndarray) -> None:
        """Planes ``z0 .. z0 + n`` of the volume: ``block`` is (n, y, x) or (c, n, y, x), and
        ``z0`` is where the previous block ended."""
        if block.ndim != len(self.shape) or block.shape[-2:] != self.shape[-2:]:
            raise BadInput(
                f"{self.path}: a block of planes of {self.shape} must have shape "
                f"{(*self.shape[:-3], 'n', *self.shape[-2:])}, got {block.shape}"
            )
        depth, rows = self.shape[-3], self.array.chunks[-3]
        if z0 != self.next or z0 + block.shape[-3] > depth:
            raise BadInput(
                f"{self.path}: planes {z0}..{z0 + block.shape[-3]} of {depth}; expected the "
                f"next block to start at plane {self.next}"
            )
        while block.shape[-3]:
            held = self.next % rows  # planes of this row of chunks in the buffer
            n = min(rows - held, block.shape[-3])
            if self.buffer is None:
                self.buffer = np.empty((*self.shape[:-3], rows, *self.shape[-2:]), self.array.dtype)
            self.buffer[..., held : held + n, :, :] = block[..., :n, :, :]
            self.next += n
            block = block[..., n:, :, :]
            filled = held + n
            if filled == rows or self.next == depth:
                self.array[..., self.next - filled : self.next, :, :] = self.buffer[
                    ..., :filled, :, :
                ]

    def __enter__(self) -> OmeZarrWriter:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        self.buffer = None
        if kind is None and self.next == self.shape[-3]:
            self.root.attrs.update(self.attrs)
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(self.partial, self.path)
            return
        shutil.rmtree(self.partial, ignore_errors=True)
        if kind is None:
            raise BadInput(
                f"{self.path}: planes {self.next}..{self.shape[-3]} were never written; "
                "nothing was kept"
            )
