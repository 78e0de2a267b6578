"""The same crops for every loader: synthetic nuclei written as per-sample TIFF slice folders
(the seed projects' layout), per-sample ``.npy`` files, and streamvol shards twice (with the
free-rotation margin the workload needs, and with none)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _loaders.workload import SPEC_TOML, augment_spec


@dataclass
class Data:
    tiff: list[Path]  # per-sample raw/ folders of slices
    npy: list[Path]
    shards: Path  # --context auto for the spec: stored block = crop + 2 * margin
    shards0: Path  # --context 0: exactly the crops
    size: int
    margin: tuple[int, int, int]
    mean: float
    std: float
    seconds: float


def read_slices(folder: Path) -> np.ndarray:
    """The seed projects' reader: one ``tifffile.imread`` per z slice, stacked."""
    import tifffile

    return np.stack([tifffile.imread(p) for p in sorted(folder.glob("*.tif"))])


def prepare(root: Path, samples: int, size: int) -> Data:
    from streamvol import synth
    from streamvol.augment import Augment
    from streamvol.shard import parse_config, shard

    started = time.perf_counter()
    source = synth.make("nuclei", root / "tiff", n=samples, size=size)
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    for folder in folders:  # images only: no loader here reads or resamples masks
        shutil.rmtree(folder / "mask", ignore_errors=True)
    (root / "npy").mkdir()
    npy = []
    for folder in folders:
        npy.append(root / "npy" / f"{folder.name}.npy")
        np.save(npy[-1], read_slices(folder / "raw"))
    spec_file = root / "augment.toml"
    spec_file.write_text(SPEC_TOML)
    if Augment.from_file(spec_file) != augment_spec():
        raise RuntimeError(f"{spec_file} does not describe the benchmark's augmentation")
    sharded = {}
    for name, context in (("shards", "auto"), ("shards0", 0)):
        config = parse_config(
            [source],
            plan="sample",
            crop=size,
            context=context,
            augment=str(spec_file),
            split="1",
            shard_size=32,
        )
        sharded[name] = shard(config, root / name, workers=2).manifest
    manifest = sharded["shards"]
    if tuple(manifest["margin"]) != augment_spec().margin(size):
        raise RuntimeError(f"--context auto gave margin {manifest['margin']}")
    return Data(
        tiff=[f / "raw" for f in folders],
        npy=npy,
        shards=root / "shards",
        shards0=root / "shards0",
        size=size,
        margin=tuple(manifest["margin"]),
        mean=float(manifest["stats"]["mean"]),
        std=float(manifest["stats"]["std"]),
        seconds=time.perf_counter() - started,
    )
