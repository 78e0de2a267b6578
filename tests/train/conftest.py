"""A tiny, learnable shard set: bright-centred blobs against flat noise, one crop per volume."""

from __future__ import annotations

import numpy as np
import pytest

from streamvol.shard import parse_config, shard


def _blobs(folder, n=48, shape=(9, 11, 11), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    zz, yy, xx = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    blob = np.exp(-(zz**2 + yy**2 + xx**2) / 6.0)
    rows = ["sample,class"]
    for i in range(n):
        label = "blob" if i % 2 else "flat"
        image = rng.normal(0, 0.3, shape) + (2.0 * blob if label == "blob" else 0.0)
        np.save(folder / f"s{i:03d}.npy", image.astype(np.float32))
        rows.append(f"s{i:03d},{label}")
    (folder / "classes.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def blob_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    src = _blobs(root / "src")
    out = root / "shards"
    shard(parse_config([src], plan="sample", crop="9,11,11", context=0, split="0.5,0.25,0.25"), out)
    return out


@pytest.fixture(scope="session")
def blob_folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobfolds")
    src = _blobs(root / "src", n=30, seed=1)
    out = root / "shards"
    shard(parse_config([src], plan="sample", crop="9,11,11", context=0, folds=3), out)
    return out


@pytest.fixture(scope="session")
def cube_shards(tmp_path_factory):
    """Blobs in 12^3 crops: square in y-x (turns about z apply) and a ViT patch multiple."""
    root = tmp_path_factory.mktemp("cubes")
    src = _blobs(root / "src", n=40, shape=(12, 12, 12), seed=2)
    out = root / "shards"
    shard(parse_config([src], plan="sample", crop="12", context=0, split="0.5,0.25,0.25"), out)
    return out


@pytest.fixture(scope="session")
def seg_folds(tmp_path_factory):
    """Synthetic nuclei and their masks in 3 folds of 8 x 16 x 16 crops: a segmentation set."""
    from streamvol import synth

    root = tmp_path_factory.mktemp("segfolds")
    data = synth.make("nuclei", root / "nuclei", n=6, size=(8, 16, 16), seed=3)
    out = root / "shards"
    shard(parse_config([data], plan="grid", crop="8,16,16", context=0, folds=3), out)
    return out
