"""Small real data sets for the sharder tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr


def write_copick(
    root: Path,
    *,
    particles: dict[str, float],
    picks: dict[str, list[tuple[float, float, float]]],
    shape: tuple[int, int, int] = (16, 20, 20),
    voxel: float = 10.0,
    run: str = "TS_1",
) -> Path:
    """A one-run copick project: OME-Zarr tomogram, config, and picks given in voxels (z, y, x)."""
    tomo = root / "static" / "ExperimentRuns" / run / "VoxelSpacing10.000" / "denoised.zarr"
    group = zarr.open_group(tomo, mode="w", zarr_format=2)
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    group.create_array("0", shape=shape, dtype="float32", chunks=(8, 8, 8))[:] = data
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [voxel] * 3}],
                }
            ],
        }
    ]
    config = {
        "name": "test",
        "pickable_objects": [
            {"name": n, "is_particle": True, "label": i + 1, "radius": r}
            for i, (n, r) in enumerate(particles.items())
        ],
    }
    (root / "copick_config.json").write_text(json.dumps(config))
    pick_dir = root / "overlay" / "ExperimentRuns" / run / "Picks"
    pick_dir.mkdir(parents=True)
    for name, zyx in picks.items():
        doc = {
            "pickable_object_name": name,
            "run_name": run,
            "unit": "angstrom",
            "points": [
                {"location": {"x": x * voxel, "y": y * voxel, "z": z * voxel}} for z, y, x in zyx
            ],
        }
        (pick_dir / f"{name}.json").write_text(json.dumps(doc))
    return root
