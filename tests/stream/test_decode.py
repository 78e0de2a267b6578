"""Safe decoding: only .npy without pickles, .json, .cls and text; bad tars are named."""

from __future__ import annotations

import io
import pickle
import tarfile

import fsspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.errors import ShardError, UnsafeMember
from streamvol.stream.decode import (
    Expected,
    MappedFile,
    decode_member,
    iter_samples,
    iter_tar,
)
from streamvol.stream.index import ShardSet


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_round_trip_of_every_safe_member(tmp_path):
    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = _tar(
        tmp_path / "ok.tar",
        [
            ("a_z1_y2_x3.image.npy", _npy(image)),
            ("a_z1_y2_x3.cls", b"2\n"),
            ("a_z1_y2_x3.json", b'{"source": "a"}'),
            ("b_z0_y0_x0.image.npy", _npy(image + 1)),
            ("b_z0_y0_x0.txt", b"note"),
        ],
    )
    samples = list(iter_tar(path))
    assert [s["__key__"] for s in samples] == ["a_z1_y2_x3", "b_z0_y0_x0"]
    assert np.array_equal(samples[0]["image.npy"], image)
    assert samples[0]["cls"] == 2 and samples[0]["json"] == {"source": "a"}
    assert samples[1]["txt"] == "note"


@pytest.mark.parametrize("suffix", ["pyd", "pickle", "pth", "pt", "exe"])
def test_unsafe_members_are_refused_by_name(tmp_path, suffix):
    path = _tar(tmp_path / "evil.tar", [(f"k_z0_y0_x0.{suffix}", pickle.dumps({"x": 1}))])
    with pytest.raises(UnsafeMember, match=rf"evil\.tar key k_z0_y0_x0.*\.{suffix}"):
        list(iter_tar(path))


def test_object_npy_is_never_unpickled(tmp_path):
    payload = _npy(np.array([{"x": 1}], dtype=object))
    path = _tar(tmp_path / "obj.tar", [("k_z0_y0_x0.image.npy", payload)])
    with pytest.raises(ShardError, match=r"obj\.tar key k_z0_y0_x0.*corrupt"):
        list(iter_tar(path))


@pytest.mark.parametrize("opener", [MappedFile, io.FileIO], ids=["mapped", "file"])
@pytest.mark.parametrize("cut", [200_000, 131_700, 600])
def test_truncated_tar_is_named(tmp_path, opener, cut):
    big = np.zeros((32, 32, 32), np.float32)
    path = _tar(tmp_path / "cut.tar", [(f"k{i}_z0_y0_x0.image.npy", _npy(big)) for i in range(3)])
    path.write_bytes(path.read_bytes()[:cut])
    with opener(path) as f, pytest.raises(ShardError, match=r"cut\.tar.*truncated"):
        list(iter_samples(f, str(path)))


def test_mapped_reads_equal_streamed_ones_and_stay_private(tmp_path):
    """Members read in place from the memory map equal those read from the file, outlive the
    map's closing, and are writable without writing to the shard."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(5, 6, 7)).astype(t) for t in (np.float32, np.uint16, np.float16)]
    path = _tar(
        tmp_path / "s.tar",
        [
            (f"k{i}_z0_y0_x0.{m}", d)
            for i, a in enumerate(arrays)
            for m, d in (("image.npy", _npy(a)), ("cls", f"{i}".encode()))
        ],
    )
    before = path.read_bytes()
    with open(path, "rb") as f:
        streamed = list(iter_samples(f, str(path)))
    with MappedFile(path) as f:
        mapped = list(iter_samples(f, str(path)))
    with MappedFile(path) as f:  # from an index offset: the second sample's header
        f.seek(3 * 512 + len(_npy(arrays[0])) // 512 * 512 + 512)
        expect = Expected(("k1_z0_y0_x0", "k2_z0_y0_x0"), last=True)
        tail = list(iter_samples(f, str(path), expect=expect))
    assert [s["__key__"] for s in tail] == ["k1_z0_y0_x0", "k2_z0_y0_x0"]
    for got, want, array in zip(mapped, streamed, arrays, strict=True):
        assert got["cls"] == want["cls"]
        assert got["image.npy"].dtype == array.dtype
        np.testing.assert_array_equal(got["image.npy"], array)
        got["image.npy"][...] = 3
    np.testing.assert_array_equal(tail[0]["image.npy"], arrays[1])  # its own private pages
    assert path.read_bytes() == before


def test_local_shards_are_mapped_and_urls_are_streamed(tmp_path):
    path = _tar(tmp_path / "a.tar", [("k_z0_y0_x0.cls", b"1")])
    shards = ShardSet(shards=())
    for url in (str(path), f"file://{path}"):
        with shards.open(url) as f:
            assert isinstance(f, MappedFile)
            assert [s["cls"] for s in iter_samples(f, url, require=())] == [1]
    fsspec.filesystem("memory").pipe("/streamvol-test/a.tar", path.read_bytes())
    with shards.open("memory://streamvol-test/a.tar") as f:
        assert not isinstance(f, MappedFile)
        assert [s["cls"] for s in iter_samples(f, "memory", require=())] == [1]


def test_decode_member_rejects_garbage_cls():
    with pytest.raises(ShardError, match="corrupt"):
        decode_member("cls", b"two", where="x.tar key k")


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(["<u1", "<u2", ">u2", "<f2", "<f4", ">f8", "<i8", "|b1"]),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
    fortran=st.booleans(),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0)]),
)
def test_npy_members_decode_exactly_and_writable(dtype, shape, fortran, version):
    array = np.arange(int(np.prod(shape)), dtype=np.int64).astype(dtype).reshape(shape)
    array = np.asfortranarray(array) if fortran else array
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    for data in (buffer.getvalue(), np.frombuffer(buffer.getvalue(), np.uint8).copy()):
        got = decode_member("image.npy", data)
        assert got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array) and got.flags.writeable


@pytest.mark.parametrize("data", [b"", b"\x93NUMPY", b"not an npy member at all"])
def test_npy_members_that_are_not_npy_are_named(data):
    with pytest.raises(ShardError, match=r"x\.tar key k: member \.image\.npy is corrupt"):
        decode_member("image.npy", data, where="x.tar key k")
