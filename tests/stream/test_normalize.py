"""Normalisation: every stored dtype comes out as its sources' values made mean 0, std 1."""

from __future__ import annotations

import numpy as np

from streamvol.io import open_volume
from streamvol.predict._run import _Prepared
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.stream import open_shards
from streamvol.stream.decode import iter_tar


def _images(folder) -> dict[str, np.ndarray]:
    return {s["__key__"]: s["image"].numpy()[0] for s in open_shards(folder, augment=None)}


def test_a_uint8_set_normalises_as_its_sources_values(tmp_path):
    """uint8 crops store (value - p0_5) / step: normalised, they are the float crops to half a
    step (inside the percentiles), and a predicted volume's planes are encoded the same way."""
    source = tmp_path / "v.npy"
    np.save(source, np.random.default_rng(0).normal(100, 20, (24, 24, 24)).astype(np.float32))
    for dtype in ("keep", "uint8"):
        shard(parse_config([source], crop=8, context=0, split="1", dtype=dtype), tmp_path / dtype)
    stats = read_manifest(tmp_path / "uint8")["stats"]
    step = (stats["p99_5"] - stats["p0_5"]) / 255
    floats, quantised = _images(tmp_path / "keep"), _images(tmp_path / "uint8")
    assert floats.keys() == quantised.keys() and len(floats) == 27
    every = np.concatenate([q.ravel() for q in quantised.values()])
    assert abs(every.mean()) < 0.02 and 0.97 < every.std() <= 1.0  # clipped at the percentiles
    for key, f in floats.items():
        raw = f * stats["std"] + stats["mean"]
        inside = (raw > stats["p0_5"]) & (raw < stats["p99_5"])
        error = np.abs(quantised[key] - f)[inside]
        assert error.max() <= step / 2 / stats["std"] + 1e-5, key

    manifest = read_manifest(tmp_path / "uint8")
    planes = _Prepared(open_volume(source), manifest)[0:24]
    for sample in iter_tar(next((tmp_path / "uint8").glob("*.tar"))):
        box = tuple(slice(a, b) for a, b in sample["json"]["box"])
        np.testing.assert_allclose(planes[box], quantised[sample["__key__"]], atol=1e-5)
