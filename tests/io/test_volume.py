"""Each reader returns exactly what the real library wrote, with the right voxel size."""

from __future__ import annotations

import pickle

import hypothesis.strategies as st
import mrcfile
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import example, given, settings

from streamvol.errors import (
    BadOption,
    InconsistentSlices,
    NoVolumeFound,
    ShapeMismatch,
    UnreadableVolume,
)
from streamvol.io import natural_key, open_mask, open_volume, source_id


@pytest.fixture
def vol() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 60000, (7, 9, 11)).astype(np.uint16)


def _check(volume, expected: np.ndarray) -> None:
    assert volume.shape == expected.shape
    assert volume.dtype == expected.dtype
    assert np.array_equal(volume.data.compute(), expected)
    assert np.array_equal(volume.data[2:5, 1:8, 3:10].compute(), expected[2:5, 1:8, 3:10])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array(tmp_path, vol, zarr_format):
    path = tmp_path / "a.zarr"
    z = zarr.create_array(
        path, shape=vol.shape, chunks=(3, 4, 5), dtype=vol.dtype, zarr_format=zarr_format
    )
    z[:] = vol
    volume = open_volume(path)
    _check(volume, vol)
    assert volume.voxel_size is None
    assert volume.format == f"zarr-v{zarr_format}"


def _write_ngff(path, levels, zarr_format, unit="angstrom", channel=False):
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    names = ["c", "z", "y", "x"] if channel else ["z", "y", "x"]
    axes = [{"name": n, "type": "channel" if n == "c" else "space"} for n in names]
    for axis in axes:
        if axis["type"] == "space":
            axis["unit"] = unit
    datasets = []
    for i, level in enumerate(levels):
        scale = [10.0 * 2**i, 5.0 * 2**i, 5.0 * 2**i]
        data = level[None] if channel else level
        if channel:
            scale = [1.0, *scale]
        group.create_array(str(i), shape=data.shape, dtype=data.dtype, chunks=data.shape)[:] = data
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = [{"version": "0.4" if zarr_format == 2 else "0.5", "axes": axes, "datasets": datasets}]
    if zarr_format == 2:
        group.attrs["multiscales"] = ms
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": ms}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("channel", [False, True])
def test_ome_ngff_levels_and_voxel_size(tmp_path, vol, zarr_format, channel):
    half = vol[::2, ::2, ::2].copy()
    path = tmp_path / "t.zarr"
    _write_ngff(path, [vol, half], zarr_format, channel=channel)
    level0 = open_volume(path)
    _check(level0, vol)
    assert level0.voxel_size == (10.0, 5.0, 5.0)
    level1 = open_volume(path, level=1)
    assert np.array_equal(level1.data.compute(), half)
    assert level1.voxel_size == (20.0, 10.0, 10.0)
    with pytest.raises(BadOption, match=r"level=2: .*expected a level of 0\.\.1"):
        open_volume(path, level=2)


def test_ome_ngff_units_convert_to_angstrom(tmp_path, vol):
    path = tmp_path / "nm.zarr"
    _write_ngff(path, [vol], 2, unit="nanometer")
    assert open_volume(path).voxel_size == (100.0, 50.0, 50.0)


@pytest.mark.parametrize("scale", [[10.0, 5.0], "10", None])
def test_ome_ngff_scale_of_the_wrong_length_is_named(tmp_path, vol, scale):
    path = tmp_path / "bad.zarr"
    _write_ngff(path, [vol], 2)
    group = zarr.open_group(path, mode="r+")
    ms = group.attrs["multiscales"]
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = scale
    group.attrs["multiscales"] = ms
    with pytest.raises(UnreadableVolume, match=r"bad\.zarr: level 0's scale .*expected 3 numbers"):
        open_volume(path)


def test_zarr_group_without_metadata_is_named(tmp_path, vol):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("raw", shape=vol.shape, dtype=vol.dtype)
    with pytest.raises(NoVolumeFound, match=r"g\.zarr.*multiscales.*raw"):
        open_volume(tmp_path / "g.zarr")


def test_multipage_tiff(tmp_path, vol):
    tifffile.imwrite(tmp_path / "a.tif", vol)
    volume = open_volume(tmp_path / "a.tif")
    _check(volume, vol)
    assert volume.format == "tiff"


def test_multipage_tiff_compressed_and_imagej_voxel_size(tmp_path, vol):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        vol,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.25),
        metadata={"spacing": 0.5, "unit": "um"},
    )
    volume = open_volume(path)
    _check(volume, vol)
    assert volume.voxel_size == pytest.approx((5000.0, 2500.0, 2000.0))
    for unit in ("\\u00B5m", "micron"):  # ImageJ writes the micro sign escaped
        tifffile.imwrite(
            path, vol, imagej=True, resolution=(5, 4), metadata={"spacing": 2, "unit": unit}
        )
        assert open_volume(path).voxel_size == pytest.approx((2e4, 2500.0, 2000.0)), unit
    tifffile.imwrite(tmp_path / "z.tif", vol, compression="zlib")
    _check(open_volume(tmp_path / "z.tif"), vol)


@pytest.mark.parametrize("suffix", ["tif", "npy"])
def test_graph_holds_a_path_not_the_pixels(tmp_path, suffix):
    big = np.zeros((32, 64, 64), np.uint16)
    path = tmp_path / f"big.{suffix}"
    tifffile.imwrite(path, big) if suffix == "tif" else np.save(path, big)
    data = open_volume(path).data
    assert data.chunks[1:] == ((64,), (64,))  # z slabs of whole planes: pages are read lazily
    assert len(pickle.dumps(data)) < 10_000


def test_slice_folder_natural_order(tmp_path, vol):
    folder = tmp_path / "raw"
    folder.mkdir()
    for i, plane in enumerate(vol):
        tifffile.imwrite(folder / f"slice{i}.tif", plane)  # slice10 would sort before slice2
    (folder / "._slice0.tif").write_bytes(b"\0\5\26\7" + bytes(60))  # a Mac's AppleDouble
    volume = open_volume(folder)
    _check(volume, vol)
    assert volume.format == "tiff-slices"


def test_natural_key_sorts_numbers_by_value():
    names = ["slice10.tif", "slice2.tif", "slice1.tif", "Slice3.tif"]
    assert sorted(names, key=natural_key) == [
        "slice1.tif",
        "slice2.tif",
        "Slice3.tif",
        "slice10.tif",
    ]


def test_slice_folder_with_odd_slice_names_it(tmp_path, vol):
    folder = tmp_path / "raw"
    folder.mkdir()
    for i, plane in enumerate(vol):
        tifffile.imwrite(folder / f"s{i:02d}.tif", plane if i != 4 else plane[:-1])
    with pytest.raises(InconsistentSlices, match=r"s04\.tif.*shape"):
        open_volume(folder)
    tifffile.imwrite(folder / "s04.tif", vol[4].astype(np.float32))
    with pytest.raises(InconsistentSlices, match=r"s04\.tif.*float32"):
        open_volume(folder)


def test_mrc_with_voxel_size(tmp_path, vol):
    data = vol.astype(np.float32)
    with mrcfile.new(tmp_path / "t.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (3.0, 4.0, 5.0)  # x, y, z
    volume = open_volume(tmp_path / "t.mrc")
    _check(volume, data)
    assert volume.voxel_size == (5.0, 4.0, 3.0)


def test_npy_memory_mapped(tmp_path, vol):
    np.save(tmp_path / "v.npy", vol)
    volume = open_volume(tmp_path / "v.npy")
    _check(volume, vol)


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)),
    dtype=st.sampled_from(["uint8", "uint16", "int16", "float32"]),
    fmt=st.sampled_from(["npy", "tif", "mrc", "zarr"]),
)
@example(shape=(1, 2, 1), dtype="uint8", fmt="tif")  # tifffile reads a last axis of 1 as samples
@example(shape=(3, 4, 1), dtype="uint16", fmt="tif")
def test_round_trip_any_shape_and_dtype(tmp_path_factory, shape, dtype, fmt):
    rng = np.random.default_rng(1)
    expected = (rng.random(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("rt") / f"v.{fmt}"
    if fmt == "npy":
        np.save(path, expected)
    elif fmt == "tif":
        tifffile.imwrite(path, expected, photometric="minisblack")
    elif fmt == "mrc":
        if dtype == "uint8":
            expected = expected.astype(np.int8)
        with mrcfile.new(path) as mrc:
            mrc.set_data(expected)
    else:
        zarr.create_array(path, shape=shape, dtype=dtype, chunks=(2, 3, 3))[:] = expected
    got = open_volume(path)
    assert got.shape == expected.shape
    assert np.array_equal(got.data.compute(), expected)
    whole = np.asarray(got)  # numpy's protocol reads the volume, as of the dask array
    assert whole.dtype == expected.dtype and np.array_equal(whole, expected)
    assert np.asarray(got, dtype=np.float64).dtype == np.float64


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(NoVolumeFound, match="nope"):
        open_volume(tmp_path / "nope.tif")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(NoVolumeFound, match=r"notes\.txt"):
        open_volume(tmp_path / "notes.txt")


def test_empty_folder_says_what_it_tried(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(NoVolumeFound, match=r"saw 1 entries.*TIFF slices"):
        open_volume(tmp_path / "empty")


@pytest.mark.parametrize("suffix", ["tif", "mrc", "npy"])
def test_corrupt_files_are_named(tmp_path, suffix):
    path = tmp_path / f"bad.{suffix}"
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(UnreadableVolume, match=rf"bad\.{suffix}"):
        open_volume(path)


def test_truncated_mrc_is_named(tmp_path, vol):
    with mrcfile.new(tmp_path / "t.mrc") as mrc:
        mrc.set_data(vol.astype(np.float32))
    raw = (tmp_path / "t.mrc").read_bytes()
    (tmp_path / "t.mrc").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UnreadableVolume, match=r"t\.mrc.*truncated"):
        open_volume(tmp_path / "t.mrc")


def test_mask_shape_must_match(tmp_path, vol):
    np.save(tmp_path / "img.npy", vol)
    np.save(tmp_path / "mask.npy", np.zeros((7, 9, 10), np.uint8))
    image = open_volume(tmp_path / "img.npy")
    with pytest.raises(ShapeMismatch, match=r"mask\.npy.*\(7, 9, 10\).*img\.npy.*\(7, 9, 11\)"):
        open_mask(tmp_path / "mask.npy", image)
    np.save(tmp_path / "good.npy", (vol > 100).astype(np.uint8))
    assert open_mask(tmp_path / "good.npy", image).shape == image.shape


def test_source_id_has_no_dots():
    assert source_id("/data/TS_5_4.denoised.zarr") == "TS_5_4-denoised"
    assert source_id("cell 01.tif") == "cell-01"


@pytest.mark.parametrize("shape", [(16, 16, 3), (5, 16, 16, 3)])
def test_an_rgb_tiff_is_refused(tmp_path, shape):
    """RGB pixels are no (z, y, x) volume: (16, 16, 3) would read as 3 voxels wide."""
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros(shape, np.uint8), photometric="rgb")
    with pytest.raises(UnreadableVolume, match=r"rgb\.tif: 3 samples per pixel \(RGB"):
        open_volume(tmp_path / "rgb.tif")


def test_a_hyperstack_with_channels_is_refused_naming_them(tmp_path):
    """ZCYX with 2 channels is no (z, y, x) volume; a channel axis of 1 is no channel; a 3D
    stack labelled CYX (tifffile's default for a 3D ImageJ array) is read as z."""
    path = tmp_path / "hyper.tif"
    data = np.zeros((5, 2, 16, 16), np.uint16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(UnreadableVolume, match=r"hyper\.tif: .*axes ZCYX.*: 2 channels; save"):
        open_volume(path)
    tifffile.imwrite(path, data[:, :1], imagej=True, metadata={"axes": "ZCYX"})
    assert open_volume(path).shape == (5, 16, 16)
    tifffile.imwrite(path, data[:, 0], imagej=True)
    assert open_volume(path).shape == (5, 16, 16)


def test_a_2d_tiff_is_refused_as_a_2d_npy_is(tmp_path):
    image = np.arange(12 * 13, dtype=np.uint16).reshape(12, 13)
    tifffile.imwrite(tmp_path / "plane.tif", image, photometric="minisblack")
    np.save(tmp_path / "plane.npy", image)
    for name in ("plane.tif", "plane.npy"):
        with pytest.raises(UnreadableVolume, match=rf"{name}: expected a 3D.*\(12, 13\)"):
            open_volume(tmp_path / name)
    tifffile.imwrite(tmp_path / "one.tif", image[None], photometric="minisblack")
    assert open_volume(tmp_path / "one.tif").shape == (1, 12, 13)  # a 1-slice stack, as in npy
