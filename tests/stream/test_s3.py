"""Shards stream from object storage: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import numpy as np
import pytest

import streamvol
from streamvol.shard import parse_config, read_manifest, shard

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "test",
        "secret": "test",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
    }
    try:
        yield options
    finally:
        server.stop()


def test_stream_from_s3_equals_local(tmp_path, s3):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(src / f"v{i}.npy", rng.normal(size=(4, 8, 12)).astype(np.float32))
    local = tmp_path / "shards"
    shard(parse_config([src], crop=4, context=1, split="1", shard_size=5), local)
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("bucket")
    fs.put(f"{local}/", "bucket/shards/", recursive=True)

    remote = streamvol.open_shards("s3://bucket/shards", storage_options=s3, rank=1, world_size=2)
    mirror = streamvol.open_shards(local, rank=1, world_size=2)
    batches = streamvol.loader(remote, 4, 0)
    got = {s["__key__"]: s["image"] for batch in batches for s in _unbatch(batch)}
    want = {s["__key__"]: s["image"] for s in mirror}
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    total = sum(r["count"] for r in read_manifest(local)["splits"]["train"])
    assert len(remote) == -(-total // 2)


def _unbatch(batch):
    for i, key in enumerate(batch["__key__"]):
        yield {"__key__": key, "image": batch["image"][i]}
