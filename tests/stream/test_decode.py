"""Safe decoding: only .npy without pickles, .json, .cls and text; bad tars are named."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.errors import ShardError, UnsafeMember
from streamvol.stream.decode import decode_member, iter_tar


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


def test_truncated_tar_is_named(tmp_path):
    big = np.zeros((32, 32, 32), np.float32)
    path = _tar(tmp_path / "cut.tar", [(f"k{i}_z0_y0_x0.image.npy", _npy(big)) for i in range(3)])
    path.write_bytes(path.read_bytes()[:200_000])
    with pytest.raises(ShardError, match=r"cut\.tar"):
        list(iter_tar(path))


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
