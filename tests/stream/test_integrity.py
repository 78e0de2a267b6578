"""Nothing read silently wrong: member checksums on every read, the manifest's keys against the
tar's, malformed members and impossible sizes named by shard and key, never a traceback."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import fsspec
import numpy as np
import pytest

from streamvol.errors import ShardError
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.stream import open_shards
from streamvol.stream.decode import MappedFile, iter_samples, iter_tar
from streamvol.stream.inspect import verify


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """12 samples in 3 shards of 4, each with image.npy, json and cls."""
    root = tmp_path_factory.mktemp("integrity")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(src / f"v{i}.npy", rng.normal(10, 2, (4, 8, 8)).astype(np.float32))
    out = root / "shards"
    shard(parse_config([src], crop=4, context=0, split="1", shard_size=4), out)
    return out


@pytest.fixture
def folder(made, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(made, copy)
    return copy


def _member(path, suffix, index=0):
    """(header offset, data offset, size) of the ``index``-th member ending in ``suffix``."""
    with tarfile.open(path) as tar:
        found = [m for m in tar.getmembers() if m.name.endswith(suffix)]
    m = found[index]
    return m.offset, m.offset_data, m.size


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _keys(ds):
    return [s["__key__"] for s in ds]


def test_a_flipped_data_byte_is_named_by_shard_and_key(folder):
    victim = folder / "train-000001.tar"
    _, start, size = _member(victim, ".image.npy", 2)
    size_before = victim.stat().st_size
    _flip(victim, start + size // 2)  # inside the array, past the .npy header: same size
    assert victim.stat().st_size == size_before
    key = read_manifest(folder)["splits"]["train"][1]["keys"][2]
    with pytest.raises(ShardError, match=rf"train-000001\.tar key {key}.*image\.npy.*checksum"):
        list(open_shards(folder, shuffle=False))
    ds = open_shards(folder, shuffle=False, on_error="skip")
    got = _keys(ds)
    assert ds.errors == 1
    assert key not in got and len(got) == 11  # only that sample is lost, not the shard's rest
    assert len(_keys(open_shards(folder, shuffle=False, verify=False))) == 12  # verify=False


def test_iter_tar_checks_the_manifest_checksums_when_given_them(folder):
    victim = folder / "train-000000.tar"
    _, start, size = _member(victim, ".image.npy", 0)
    _flip(victim, start + size - 1)
    rec = read_manifest(folder)["splits"]["train"][0]
    with pytest.raises(ShardError, match="checksum"):
        list(iter_tar(victim, record=rec))


def _cut_last_key(folder, index):
    manifest = json.loads((folder / "manifest.json").read_text())
    rec = manifest["splits"]["train"][index]
    for name in ("keys", "offsets", "checksums"):
        rec[name] = rec[name][:-1]
    rec["count"] -= 1
    manifest["counts"]["train"] -= 1
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_keys_cut_from_the_manifest_are_noticed_while_reading(folder):
    _cut_last_key(folder, 1)
    with pytest.raises(ShardError, match=r"train-000001\.tar.*more samples than the manifest"):
        list(open_shards(folder, shuffle=False))
    problems = verify(folder)
    assert any("train-000001.tar" in p and "more samples than the manifest" in p for p in problems)


def test_a_manifest_listing_more_samples_than_the_tar_holds_is_noticed(folder):
    """The tar is intact (sha256 and size match), the manifest claims one more sample."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rec = manifest["splits"]["train"][2]
    rec["keys"].append("v9_z0_y0_x0")
    rec["offsets"].append(rec["bytes"] - 1024)
    rec["checksums"].append(rec["checksums"][-1])
    rec["count"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"train-000002\.tar.*expected 5 samples, found 4"):
        list(open_shards(folder, shuffle=False, shuffle_buffer=1))
    assert any("expected 5 samples, found 4" in p for p in verify(folder))


def test_a_key_cut_from_the_middle_is_noticed(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    rec = manifest["splits"]["train"][0]
    for name in ("keys", "offsets", "checksums"):
        del rec[name][1]
    rec["count"] -= 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"train-000000\.tar.*expected sample"):
        list(open_shards(folder, shuffle=False))


def test_a_manifest_whose_counts_disagree_with_its_keys_is_refused(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["train"][0]["count"] = 3
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"train-000000\.tar.*count 3.*4 keys"):
        open_shards(folder)


def _tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


IMAGE = _npy(np.zeros((2, 2, 2), np.float32))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("a_z0_y0_x0.json", b"{}"), ("a_z0_y0_x0.cls", b"1")], r"key a_z0_y0_x0.*no image\.npy"),
        ([("../../x.image.npy", IMAGE)], r"'\.\./\.\./x\.image\.npy'"),
        ([("/etc/x.image.npy", IMAGE)], r"'/etc/x\.image\.npy'"),
    ],
    ids=["no-image", "dotdot", "absolute"],
)
def test_malformed_samples_are_shard_errors_and_skippable(tmp_path, members, message):
    good = [("g_z0_y0_x0.image.npy", IMAGE), ("g_z0_y0_x0.cls", b"0")]
    path = _tar(tmp_path / "bad.tar", good + members)
    with pytest.raises(ShardError, match=rf"bad\.tar.*{message}"):
        list(open_shards([str(path)], shuffle=False))
    ds = open_shards([str(path)], shuffle=False, on_error="skip")
    assert _keys(ds) == ["g_z0_y0_x0"] and ds.errors == 1
    with pytest.raises(ShardError, match=rf"bad\.tar.*{message}"):
        list(iter_tar(path))


def _declare_size(path, header_at, size):
    """Rewrite a member's size field as GNU base-256 and fix the header checksum."""
    data = bytearray(path.read_bytes())
    header = data[header_at : header_at + 512]
    header[124:136] = b"\x80" + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    data[header_at : header_at + 512] = header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("opener", ["mapped", "file", "fsspec"])
def test_a_huge_declared_size_is_refused_before_allocating(folder, opener):
    victim = folder / "train-000002.tar"
    header_at, _, _ = _member(victim, ".image.npy", 1)
    _declare_size(victim, header_at, 2**60)
    header = victim.read_bytes()[header_at : header_at + 512]  # a valid header: tarfile agrees
    assert tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape").size == 2**60
    if opener == "fsspec":
        url = "memory://streamvol-integrity/huge.tar"
        fsspec.filesystem("memory").pipe(url, victim.read_bytes())
        f = fsspec.open(url, "rb").open()
    else:
        f = MappedFile(victim) if opener == "mapped" else open(victim, "rb")  # noqa: SIM115
    with f, pytest.raises(ShardError, match=r"declares 1152921504606846976 bytes"):
        list(iter_samples(f, str(victim), require=()))
    problems = verify(folder)
    assert any("train-000002.tar" in p for p in problems)
