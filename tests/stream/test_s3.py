"""Shards stream from object storage: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import socket
import tempfile

import numpy as np
import pytest

import streamvol
from streamvol.core.manifest import shard_records
from streamvol.errors import ShardError
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.stream.inspect import verify

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


def test_shard_to_s3_puts_each_tar_from_its_task_and_keeps_nothing_local(tmp_path, s3, monkeypatch):
    """The set at the URL equals the set written to a folder; each task's temporary tar is
    gone (the run needs room for the shards in flight, not the whole set); progress counts
    the shards as they land."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR afresh
    src = _blob_sources(tmp_path / "src", n=6)
    s3fs.S3FileSystem(**s3).mkdir("tasks")
    config = parse_config([src], crop=(9, 11, 11), context=0, split="0.5,0.5", shard_size=2)
    calls = []
    url = "s3://tasks/set"
    result = shard(config, url, storage_options=s3, progress=lambda *c: calls.append(c))
    local = shard(config, tmp_path / "local")
    assert read_manifest(url, s3)["splits"] == local.manifest["splits"]
    assert verify(url, s3) == []
    n = len(shard_records(local.manifest))
    assert calls[0] == (0, n) and calls[-1] == (n, n) and len(calls) == n + 1
    assert sorted(result.written) == sorted(shard_records(local.manifest))
    assert not list((tmp_path / "tmp").iterdir())


def test_shard_to_s3_from_a_distributed_cluster(tmp_path, s3):
    """Workers in their own processes write and put their tars; the client never reads one."""
    from distributed import LocalCluster

    src = _blob_sources(tmp_path / "src", n=6)
    s3fs.S3FileSystem(**s3).mkdir("cluster")
    config = parse_config([src], crop=(9, 11, 11), context=0, split="0.5,0.5", shard_size=2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        shard(config, "s3://cluster/set", storage_options=s3, scheduler=address)
    local = shard(config, tmp_path / "local")
    assert read_manifest("s3://cluster/set", s3)["splits"] == local.manifest["splits"]
    assert verify("s3://cluster/set", s3) == []


def test_shard_to_s3_over_max_bytes_writes_nothing(tmp_path, s3):
    from streamvol.errors import NotEnoughSpace

    src = _blob_sources(tmp_path / "src", n=4)
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("full")
    config = parse_config([src], crop=(9, 11, 11), context=0, split="1")
    with pytest.raises(NotEnoughSpace, match=r"s3://full/set: .* more than --max-bytes 100 b"):
        shard(config, "s3://full/set", storage_options=s3, max_bytes=100)
    assert fs.find("full") == []


def test_a_failed_rewrite_at_a_url_leaves_no_manifest(tmp_path, s3):
    """--overwrite deletes the old manifest before the first new tar lands: a run that fails
    half way leaves no manifest to pair with a mix of old and new tars."""
    from streamvol.errors import BadVolumeValues

    s3fs.S3FileSystem(**s3).mkdir("again")
    url = "s3://again/set"
    good = parse_config([_blob_sources(tmp_path / "src", n=4)], crop=(9, 11, 11), split="1")
    shard(good, url, storage_options=s3)
    bad = np.zeros((8, 16, 16), np.float32)
    bad[7, 15, 15] = np.nan  # found by the region's task as it writes
    np.save(tmp_path / "nan.npy", bad)
    regions = parse_config(
        [tmp_path / "nan.npy"], plan="regions", crop=4, crops_per_region=2, split="1"
    )
    with pytest.raises(BadVolumeValues, match=r"nan\.npy"):
        shard(regions, url, storage_options=s3, overwrite=True)
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(url, s3)


def test_a_stopped_run_at_a_url_resumes_keeping_what_it_put(tmp_path, s3, cut_shard_writes):
    """As in a folder: the rerun keeps the tars put before the stop (their records said so),
    writes the rest, and a rerun of the finished set writes nothing; a tar whose object lost
    bytes is written again."""
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("resume")
    url = "s3://resume/set"
    src = _blob_sources(tmp_path / "src", n=8)
    config = parse_config([src], crop=(9, 11, 11), split="1", shard_size=2)
    calls = cut_shard_writes(3)
    with pytest.raises(KeyboardInterrupt):
        shard(config, url, storage_options=s3, workers=1)
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(url, s3)
    cut_shard_writes.restore()
    second = shard(config, url, storage_options=s3, workers=1)
    assert sorted(second.skipped) == sorted(calls[:2])  # put before the cut: kept
    assert calls[2] in second.written and len(second.written) == 2
    assert verify(url, s3) == []
    assert read_manifest(url, s3)["splits"] == shard(config, tmp_path / "local").manifest["splits"]
    assert not fs.find("resume/set/.streamvol")  # the records go once the manifest is there

    third = shard(config, url, storage_options=s3)
    assert third.written == [] and len(third.skipped) == 4
    name = sorted(third.skipped)[1]
    fs.pipe(f"resume/set/{name}", fs.cat(f"resume/set/{name}")[:1000])
    fourth = shard(config, url, storage_options=s3)
    assert fourth.written == [name] and verify(url, s3) == []


def test_another_command_at_a_url_is_refused_without_overwrite(tmp_path, s3):
    s3fs.S3FileSystem(**s3).mkdir("other")
    url = "s3://other/set"
    src = _blob_sources(tmp_path / "src", n=4)
    shard(parse_config([src], crop=(9, 11, 11), split="1"), url, storage_options=s3)
    other = parse_config([src], crop=(5, 5, 5), split="1")
    with pytest.raises(ShardError, match=r"holds a different command; use --overwrite"):
        shard(other, url, storage_options=s3)
    assert read_manifest(url, s3)["crop"] == [9, 11, 11]  # nothing lost
    shard(other, url, storage_options=s3, overwrite=True)
    assert read_manifest(url, s3)["crop"] == [5, 5, 5] and verify(url, s3) == []


def test_verify_over_s3_reads_each_tar_once_and_checks_its_members(tmp_path, s3):
    """The member checks run on the downloaded copy: a manifest whose member checksum was
    altered (the tar, and so its sha256, intact) is caught; progress counts every byte once."""
    import json

    local = _two_volumes(tmp_path, shard_size=2)
    manifest = json.loads((local / "manifest.json").read_text())
    record = manifest["splits"]["train"][1]
    record["checksums"][0][0] = "0" * 16
    (local / "manifest.json").write_text(json.dumps(manifest))
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("members")
    fs.put(f"{local}/", "members/shards/", recursive=True)
    calls = []
    problems = verify("s3://members/shards", s3, progress=lambda *c: calls.append(c))
    assert len(problems) == 1 and f"{record['name']}" in problems[0]
    assert "fails its checksum" in problems[0]
    total = sum(r["bytes"] for r in shard_records(manifest).values())
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [n for n, _ in calls] == sorted(n for n, _ in calls)


def test_a_url_out_of_reach_is_one_error_naming_it(tmp_path, s3):
    """A closed endpoint: shard refuses before reading a source, readers before a batch."""
    from streamvol.errors import StorageUnreachable

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    away = {
        **s3,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}},  # botocore's retries: 8 s a call
    }
    config = parse_config([tmp_path / "no-such-source"], crop=4, split="1")
    with pytest.raises(StorageUnreachable, match=r"s3://away/set: could not reach it \("):
        shard(config, "s3://away/set", storage_options=away)
    with pytest.raises(StorageUnreachable, match=r"s3://away/set: could not reach it \("):
        streamvol.open_shards("s3://away/set", storage_options=away)


def _two_volumes(tmp_path, shard_size: int):
    """A local set of two 4x8x8 volumes' crops of 4^3, ``shard_size`` a tar."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        np.save(src / f"v{i}.npy", np.random.default_rng(i).normal(size=(4, 8, 8)))
    local = tmp_path / "shards"
    shard(parse_config([src], crop=4, context=0, split="1", shard_size=shard_size), local)
    return local


def _unbatch(batch):
    for i, key in enumerate(batch["__key__"]):
        yield {"__key__": key, "image": batch["image"][i]}


def _blob_sources(folder, n=16, shape=(9, 11, 11)):
    from tests.train.conftest import _blobs

    return _blobs(folder, n=n, shape=shape)


def test_every_command_takes_urls_and_storage_options(tmp_path, s3, monkeypatch):
    """shard --out s3://, inspect --verify and --preview, train, evaluate and predict on
    s3:// with --storage-options alone (no AWS_ENDPOINT_URL), and no local folder named s3:."""
    import json
    import sys

    from typer.testing import CliRunner

    from streamvol.cli import app

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("cli")
    src = _blob_sources(tmp_path / "src")
    options = ["--storage-options", json.dumps(s3)]
    runner = CliRunner()
    url = "s3://cli/blobs"
    shard_args = [str(src), "--out", url, "--plan", "sample", "--crop", "9,11,11", "--context", "0"]
    command = ["shard", *shard_args, "--split", "0.5,0.25,0.25", *options]
    monkeypatch.setattr(sys, "argv", ["streamvol", *command])  # as the shell passes it
    done = runner.invoke(app, command, env={"STREAMVOL_PROGRESS_EVERY": "0"})
    assert done.exit_code == 0, done.output
    assert "shard: writing: 3/3 shards, " in done.output
    made_by = read_manifest(url, s3)["command"]  # the manifest travels: no credentials in it
    assert made_by.endswith("--split 0.5,0.25,0.25 --storage-options '<not recorded>'")
    assert s3["client_kwargs"]["endpoint_url"] not in made_by
    assert not (tmp_path / "s3:").exists() and not list(tmp_path.glob("s3*"))
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("cli/blobs")}
    assert names == {"manifest.json", "train-000000.tar", "val-000000.tar", "test-000000.tar"}
    inspect = ["inspect", url, "--verify", "--preview", "p.png", *options]
    done = runner.invoke(app, inspect, env={"STREAMVOL_PROGRESS_EVERY": "0"})
    assert done.exit_code == 0, done.output
    assert "verify: reading every shard: " in done.output
    assert "verified" in done.output and (tmp_path / "p.png").is_file()
    train = ["train", url, "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    train += ["--model", "simple_cnn", "--augment", "none", "--device", "cpu", "--name", "r"]
    done = runner.invoke(app, [*train, *options])
    assert done.exit_code == 0, done.output
    assert "storage_options" not in (tmp_path / "runs" / "r" / "config.json").read_text()
    done = runner.invoke(app, ["evaluate", "runs/r", *options])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["predict", "runs/r", "--out", "p.csv", *options])
    assert done.exit_code == 0, done.output
    without = runner.invoke(app, ["inspect", url, "--verify"])  # no endpoint: a clear failure
    assert without.exit_code == 1 and isinstance(without.exception, SystemExit)
    assert f"{url}: could not reach it (" in without.output
    assert "check --storage-options (key, secret, client_kwargs.endpoint_url)" in without.output


def test_verify_over_s3_finds_a_flipped_byte(tmp_path, s3):
    local = _two_volumes(tmp_path, shard_size=4)
    data = bytearray((local / "train-000000.tar").read_bytes())
    data[len(data) // 3] ^= 1
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("flipped")
    fs.put(f"{local}/", "flipped/shards/", recursive=True)
    fs.pipe("flipped/shards/train-000000.tar", bytes(data))
    problems = verify("s3://flipped/shards", s3)
    assert len(problems) == 1 and "s3://flipped/shards/train-000000.tar" in problems[0]
