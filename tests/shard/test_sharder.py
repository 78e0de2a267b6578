"""The sharder end to end on real files: exact crops, exact keys, splits, resume, bad input."""

from __future__ import annotations

import json
import os
import tarfile
import warnings

import mrcfile
import numpy as np
import pytest
import tifffile
import webdataset as wds
import xxhash
import zarr

from streamvol.core.manifest import shard_records
from streamvol.errors import (
    BadLabels,
    BadOption,
    BadVolumeValues,
    CropTooLarge,
    NoVolumeFound,
    PointsOutsideVolume,
    ShardError,
)
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.shard.plan import crop_box
from streamvol.stream.decode import iter_tar
from streamvol.stream.inspect import verify

SHAPE = (13, 17, 19)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(3).normal(100, 20, SHAPE).astype(np.float32)


def _write(fmt: str, folder, vol):
    if fmt == "npy":
        path = folder / "vol.npy"
        np.save(path, vol)
    elif fmt == "zarr":
        path = folder / "vol.zarr"
        zarr.create_array(path, shape=vol.shape, chunks=(4, 5, 6), dtype=vol.dtype)[:] = vol
    elif fmt == "ome-zarr":
        path = folder / "vol.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=2)
        group.create_array("0", shape=vol.shape, chunks=(5, 5, 5), dtype=vol.dtype)[:] = vol
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "axes": [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [10] * 3}],
                    }
                ],
            }
        ]
    elif fmt == "tiff":
        path = folder / "vol.tif"
        tifffile.imwrite(path, vol)
    elif fmt == "slices":
        path = folder / "vol"
        path.mkdir()
        for i, plane in enumerate(vol):
            tifffile.imwrite(path / f"z{i}.tif", plane)
    elif fmt == "mrc":
        path = folder / "vol.mrc"
        with mrcfile.new(path) as mrc:
            mrc.set_data(vol)
    return path


def _expected_block(vol, centre, crop, margin):
    box = crop_box(centre, crop, margin)
    padded = np.pad(vol, [(margin[i] + crop[i], margin[i] + crop[i]) for i in range(3)])
    offset = [margin[i] + crop[i] for i in range(3)]
    return padded[tuple(slice(a + o, b + o) for (a, b), o in zip(box, offset, strict=True))]


@pytest.mark.parametrize("fmt", ["npy", "zarr", "ome-zarr", "tiff", "slices", "mrc"])
def test_crops_equal_the_source_bit_for_bit(tmp_path, volume, fmt):
    path = _write(fmt, tmp_path, volume)
    config = parse_config([path], crop="6,8,8", context=2, pad="zero", split="1", shard_size=3)
    result = shard(config, tmp_path / "out")
    manifest = result.manifest
    tars = sorted((tmp_path / "out").glob("train-*.tar"))
    assert [t.name for t in tars] == [s["name"] for s in manifest["splits"]["train"]]

    # plain tarfile: the planned keys, in order, with no dots
    keys = [k for s in manifest["splits"]["train"] for k in s["keys"]]
    assert len(keys) == len(set(keys)) == manifest["counts"]["train"]
    names = []
    for t in tars:
        with tarfile.open(t) as tar:
            names += tar.getnames()
    assert [n.split(".", 1)[0] for n in names[::2]] == keys
    assert all("." not in k for k in keys)

    # real webdataset reads the same keys and members
    seen = []
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        seen.append(sample["__key__"])
        assert set(sample) >= {"__key__", "image.npy", "json"}
    assert seen == keys

    # every crop (with its margin) equals the source region; zeros beyond the edge
    crop, margin = (6, 8, 8), (2, 2, 2)
    count = 0
    for t in tars:
        for sample in iter_tar(t):
            meta = sample["json"]
            expected = _expected_block(volume, meta["centre"], crop, margin)
            assert sample["image.npy"].dtype == np.float32
            assert np.array_equal(sample["image.npy"], expected)
            count += 1
    # grid: tiles at 0, 6, 7 (flush) in z; 0, 8, 9 in y; 0, 8, 11 in x
    assert count == 3 * 3 * 3
    assert manifest["crop"] == [6, 8, 8] and manifest["margin"] == [2, 2, 2]
    if fmt == "ome-zarr":
        assert manifest["voxel_size"] == [10.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("mrc", "float16"), ("mrc", ">f4"), ("npy", ">f4"), ("zarr", ">u2")]
)
@pytest.mark.parametrize("plan", ["grid", "regions"])
def test_float16_and_big_endian_sources_shard_as_their_values(tmp_path, volume, fmt, dtype, plan):
    """MRC mode 12 (float16) and big-endian files: what the sharder stores and the intensity
    statistics are those of the values the file holds."""
    values = volume.astype(dtype)
    path = _write(fmt, tmp_path, values)
    options = {"crops_per_region": 2} if plan == "regions" else {}
    config = parse_config([path], plan=plan, crop=6, context=0, split="1", **options)
    manifest = shard(config, tmp_path / "out").manifest
    native = values.astype(values.dtype.newbyteorder("=")).astype(np.float64)
    assert manifest["stats"]["mean"] == pytest.approx(native.mean(), rel=1e-6)
    assert manifest["stats"]["max"] == native.max()
    count = 0
    for tar in sorted((tmp_path / "out").glob("train-*.tar")):
        for sample in iter_tar(tar):
            if plan == "grid":
                expected = _expected_block(native, sample["json"]["centre"], (6, 6, 6), (0,) * 3)
                assert np.array_equal(sample["image.npy"], expected.astype(np.float32))
            else:
                assert np.array_equal(sample["image.npy"], native.astype(np.float32))
            count += 1
    assert count == (3 * 3 * 4 if plan == "grid" else 1)  # tiles at 0, 6, flush; x: 0, 6, 12, 13


def test_manifest_records_stats_counts_and_checksums(tmp_path, volume):
    path = _write("npy", tmp_path, volume)
    result = shard(parse_config([path], crop=8, context=0, split="1"), tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert m == json.loads(json.dumps(result.manifest))
    assert m["format"] == "streamvol-shards" and m["version"] == 2
    assert m["checksum"] == "xxh3_64"
    assert m["stats"]["mean"] == pytest.approx(volume.mean(dtype=np.float64), rel=1e-6)
    assert m["stats"]["std"] == pytest.approx(volume.std(dtype=np.float64), rel=1e-5)
    assert m["stats"]["min"] == volume.min() and m["stats"]["max"] == volume.max()
    assert m["stats"]["p0_5"] < m["stats"]["p99_5"]
    assert m["dtype"] == "float32"
    assert m["task"] == "classification"
    for rec in m["splits"]["train"]:
        path = tmp_path / "out" / rec["name"]
        assert rec["bytes"] == path.stat().st_size
        with tarfile.open(path) as tar:
            first = [mem for mem in tar.getmembers() if mem.name.endswith(".image.npy")]
        assert [mem.offset for mem in first] == rec["offsets"]
        with tarfile.open(path) as tar:  # one xxh3-64 per member, in tar order, per sample
            sums = [xxhash.xxh3_64_hexdigest(tar.extractfile(mem).read()) for mem in tar]
        assert [c for sample in rec["checksums"] for c in sample] == sums
        assert [len(c) for c in rec["checksums"]] == [2] * rec["count"]
    assert verify(tmp_path / "out") == []


def test_uint8_and_float16_storage(tmp_path, volume):
    path = _write("npy", tmp_path, volume)
    for dtype, np_dtype in (("uint8", np.uint8), ("float16", np.float16)):
        out = tmp_path / dtype
        shard(parse_config([path], crop=8, context=0, split="1", dtype=dtype), out)
        sample = next(iter_tar(next(out.glob("*.tar"))))
        assert sample["image.npy"].dtype == np_dtype
        assert read_manifest(out)["dtype"] == dtype
    sample = next(iter_tar(next((tmp_path / "uint8").glob("*.tar"))))
    stats = read_manifest(tmp_path / "uint8")["stats"]
    centre = sample["json"]["centre"]
    raw = _expected_block(volume, centre, (8, 8, 8), (0, 0, 0))
    expected = np.clip(
        np.rint((raw - stats["p0_5"]) * 255 / (stats["p99_5"] - stats["p0_5"])), 0, 255
    )
    assert np.array_equal(sample["image.npy"], expected.astype(np.uint8))


def test_reflect_padding_is_recorded(tmp_path, volume):
    path = _write("npy", tmp_path, volume)
    shard(parse_config([path], crop=8, context=3, split="1"), tmp_path / "out")
    sample = next(iter_tar(next((tmp_path / "out").glob("*.tar"))))
    assert sample["json"]["padded"] == [[3, 0], [3, 0], [3, 0]]
    assert sample["json"]["pad_mode"] == "reflect"
    block = sample["image.npy"]
    assert block.shape == (14, 14, 14)
    assert np.array_equal(block[3:, 3:, 3:], volume[:11, :11, :11])
    assert np.array_equal(
        block[:3, 3:, 3:], volume[3:0:-1, :11, :11]
    )  # reflected, edge not repeated


# --- resume -----------------------------------------------------------------------------------


def _many_sources(tmp_path, n=6):
    rng = np.random.default_rng(0)
    folder = tmp_path / "vols"
    folder.mkdir()
    for i in range(n):
        np.save(folder / f"v{i}.npy", rng.normal(size=(8, 16, 16)).astype(np.float32))
    return folder


def test_rerun_rewrites_only_damaged_shards(tmp_path):
    src = _many_sources(tmp_path)
    config = parse_config([src], crop=8, context=0, split="1", shard_size=3)
    out = tmp_path / "out"
    first = shard(config, out)
    tars = sorted(out.glob("*.tar"))
    assert len(tars) == 8 and len(first.written) == 8
    old = {t.name: t.stat().st_mtime_ns for t in tars}
    with open(tars[2], "r+b") as f:
        f.truncate(tars[2].stat().st_size // 2)
    tars[5].unlink()
    second = shard(config, out)
    assert sorted(second.written) == sorted([tars[2].name, tars[5].name])
    assert len(second.skipped) == 6
    for t in tars:
        if t.name not in second.written:
            assert t.stat().st_mtime_ns == old[t.name]
    assert verify(out) == []
    assert read_manifest(out)["splits"] == first.manifest["splits"]


def test_interrupted_run_resumes_from_shard_records(tmp_path, cut_shard_writes):
    src = _many_sources(tmp_path)
    config = parse_config([src], crop=8, context=0, split="1", shard_size=3)
    out = tmp_path / "out"
    calls = cut_shard_writes(5)
    with pytest.raises(KeyboardInterrupt):
        shard(config, out, workers=1)
    assert not (out / "manifest.json").exists()
    cut_shard_writes.restore()
    second = shard(config, out, workers=1)
    assert sorted(second.skipped) == sorted(calls[:4])  # finished before the cut: kept
    assert calls[4] in second.written
    assert sorted(second.written + second.skipped) == sorted(p.name for p in out.glob("*.tar"))
    assert verify(out) == []


def test_different_command_is_refused_without_overwrite(tmp_path):
    src = _many_sources(tmp_path)
    out = tmp_path / "out"
    shard(parse_config([src], crop=8, context=0, split="1"), out)
    other = parse_config([src], crop=4, context=0, split="1")
    with pytest.raises(ShardError, match=r"different command.*--overwrite"):
        shard(other, out)
    assert read_manifest(out)["crop"] == [8, 8, 8]  # nothing lost
    shard(other, out, overwrite=True)
    assert read_manifest(out)["crop"] == [4, 4, 4]
    assert verify(out) == []


def test_a_rerun_rewrites_the_shards_whose_sources_changed_and_only_those(tmp_path):
    """The same command after a mask was corrected must not keep shards of the old mask."""
    rng = np.random.default_rng(5)
    src = tmp_path / "stacks"
    src.mkdir()
    masks = {}
    for name in ("a", "b"):
        tifffile.imwrite(src / f"{name}.tif", rng.normal(size=(8, 16, 16)).astype(np.float32))
        masks[name] = (rng.uniform(size=(8, 16, 16)) > 0.5).astype(np.uint8)
        tifffile.imwrite(src / f"{name}_mask.tif", masks[name])
    config = parse_config([src], crop="8,16,16", context=0, split="1", shard_size=1)
    out = tmp_path / "out"
    first = shard(config, out)
    tars = {next(iter_tar(out / t))["__key__"][0]: out / t for t in first.written}
    assert sorted(tars) == ["a", "b"]
    assert shard(config, out).skipped == sorted(first.written)  # unchanged: a rerun resumes
    kept = tars["a"].read_bytes()
    tifffile.imwrite(src / "b_mask.tif", 1 - masks["b"])  # same size, new voxels
    result = shard(config, out)
    assert result.written == [tars["b"].name] and result.skipped == [tars["a"].name]
    assert np.array_equal(next(iter_tar(tars["b"]))["mask.npy"], 1 - masks["b"])
    assert tars["a"].read_bytes() == kept
    assert verify(out) == []
    assert shard(config, out).skipped == sorted(first.written)


def test_a_rerun_after_a_class_table_edit_rewrites_the_relabelled_shard(tmp_path):
    src = _many_sources(tmp_path, n=3)
    table = src / "classes.csv"
    table.write_text("sample,class\nv0,round\nv1,flat\nv2,round\n")
    config = parse_config([src], crop="8,16,16", context=0, split="1", shard_size=1)
    out = tmp_path / "out"
    first = shard(config, out)
    table.write_text("sample,class\nv0,flat\nv1,flat\nv2,round\n")  # v0 relabelled
    result = shard(config, out)
    assert len(result.written) == 1 and len(result.skipped) == 2
    sample = next(iter_tar(out / result.written[0]))
    assert sample["__key__"].startswith("v0_") and sample["cls"] == 0  # flat, sorted first
    assert sorted(result.written + result.skipped) == sorted(first.written)


def test_foreign_folder_is_refused(tmp_path):
    src = _many_sources(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.pdf").write_bytes(b"precious")
    with pytest.raises(ShardError, match="did not write"):
        shard(parse_config([src], crop=8, context=0, split="1"), out)
    assert (out / "thesis.pdf").read_bytes() == b"precious"


# --- splits -----------------------------------------------------------------------------------


def test_grouped_split_and_folds(tmp_path):
    src = _many_sources(tmp_path, n=10)
    out = tmp_path / "split"
    m = shard(parse_config([src], crop=8, context=0, split="0.6,0.2,0.2", seed=1), out).manifest
    sources_of = {
        split: {k.rsplit("_z", 1)[0] for s in shards for k in s["keys"]}
        for split, shards in m["splits"].items()
    }
    assert set(sources_of) == {"train", "val", "test"}
    assert not (sources_of["train"] & sources_of["val"] or sources_of["train"] & sources_of["test"])
    assert not sources_of["val"] & sources_of["test"]
    assert sum(m["counts"].values()) == 10 * 4

    folds = shard(
        parse_config([src], crop=8, context=0, folds=5, seed=1), tmp_path / "folds"
    ).manifest
    assert list(folds["splits"]) == [f"fold{k}" for k in range(5)]
    all_keys = [k for shards in folds["splits"].values() for s in shards for k in s["keys"]]
    assert len(all_keys) == len(set(all_keys)) == 40
    per_fold = [
        {k.rsplit("_z", 1)[0] for s in shards for k in s["keys"]}
        for shards in folds["splits"].values()
    ]
    assert all(len(a & b) == 0 for i, a in enumerate(per_fold) for b in per_fold[i + 1 :])


# --- bad input: stops before writing anything --------------------------------------------------


def _assert_nothing_written(out):
    assert not out.exists() or not any(out.iterdir())


def test_crop_larger_than_volume_without_padding(tmp_path, volume):
    path = _write("npy", tmp_path, volume)
    out = tmp_path / "out"
    with pytest.raises(CropTooLarge, match=r"vol.*32"):
        shard(parse_config([path], crop=32, pad="none", split="1"), out)
    _assert_nothing_written(out)


def test_nan_in_volume(tmp_path, volume):
    bad = volume.copy()
    bad[3, 4, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    out = tmp_path / "out"
    with pytest.raises(BadVolumeValues, match=r"nan\.npy.*1 NaN or Inf"):
        shard(parse_config([tmp_path / "nan.npy"], crop=4, split="1"), out)
    _assert_nothing_written(out)


@pytest.mark.parametrize("plan", ["grid", "regions"])
def test_mask_labels_are_kept_or_refused_never_wrapped(tmp_path, plan):
    image = np.zeros((8, 8, 8), np.float32)
    mask = np.zeros((8, 8, 8), np.uint32)
    mask[:4] = 70_000  # beyond uint8: stored as int32
    np.save(tmp_path / "stack.npy", image)
    np.save(tmp_path / "stack_mask.npy", mask)
    options = {"crops_per_region": 1} if plan == "regions" else {}
    config = parse_config(
        [tmp_path / "stack.npy"], plan=plan, crop=8, context=0, split="1", **options
    )
    shard(config, tmp_path / "out")
    stored = next(iter_tar(next((tmp_path / "out").glob("*.tar"))))["mask.npy"]
    assert stored.dtype == np.int32 and np.array_equal(stored, mask)
    mask[0, 0, 0] = 3_000_000_000
    np.save(tmp_path / "stack_mask.npy", mask)
    with pytest.raises(BadLabels, match=r"stack_mask\.npy: label 3000000000; expected labels"):
        shard(config, tmp_path / "big")


def test_empty_source(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), np.float32))
    with pytest.raises(NoVolumeFound, match=r"empty\.npy.*empty"):
        shard(parse_config([tmp_path / "empty.npy"], crop=4, split="1"), tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_spots_outside_volume(tmp_path, volume):
    np.save(tmp_path / "cells.npy", volume)
    (tmp_path / "cells.csv").write_text("z,y,x,label\n3,4,5,1\n40,4,5,0\n")
    with pytest.raises(PointsOutsideVolume, match=r"cells"):
        shard(
            parse_config([tmp_path / "cells.npy"], plan="points", crop=4, split="1"),
            tmp_path / "out",
        )
    _assert_nothing_written(tmp_path / "out")


def test_class_csv_that_labels_no_crop(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "data" / name / "raw").mkdir(parents=True)
        tifffile.imwrite(
            tmp_path / "data" / name / "raw" / "stack.tif",
            rng.random((4, 8, 8)).astype(np.float32),
            photometric="minisblack",
        )
    (tmp_path / "other.csv").write_text("sample,class\nx,round\ny,flat\n")
    with pytest.raises(BadLabels, match=r"other\.csv"):
        shard(
            parse_config(
                [tmp_path / "data"],
                plan="sample",
                crop=4,
                classes=tmp_path / "other.csv",
                split="1",
            ),
            tmp_path / "out",
        )
    _assert_nothing_written(tmp_path / "out")


def test_one_class_csv_labels_several_sources(tmp_path):
    rng = np.random.default_rng(0)
    for i, folder in enumerate(("a", "a", "b", "b")):
        (tmp_path / folder).mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / folder / f"v{i}.tif", rng.random((8, 8, 8), dtype=np.float32))
    table = tmp_path / "all.csv"
    table.write_text("sample,class\nv0,x\nv1,y\nv2,y\nv3,x\n")
    config = parse_config(
        [tmp_path / "a", tmp_path / "b"], plan="sample", crop=8, classes=table, split="1"
    )
    manifest = shard(config, tmp_path / "out").manifest
    assert manifest["class_names"] == ["x", "y"]
    labels = {
        s["json"]["source"]: s["cls"]
        for tar in (tmp_path / "out").glob("train-*.tar")
        for s in iter_tar(tar)
    }
    assert labels == {"v0": 0, "v1": 1, "v2": 1, "v3": 0}
    table.write_text("sample,class\nv0,x\nv1,y\nv2,y\nv3,x\nv9,x\n")
    with pytest.raises(BadLabels, match=r"all\.csv: rows name samples in none of the sources: v9"):
        shard(config, tmp_path / "extra")
    table.write_text("sample,class\nv0,x\nv1,y\nv2,y\n")
    with pytest.raises(BadLabels, match=r"all\.csv: samples without a row: v3"):
        shard(config, tmp_path / "missing")
    _assert_nothing_written(tmp_path / "extra")
    _assert_nothing_written(tmp_path / "missing")


def test_unlabelled_spots_beside_a_class_csv_carry_their_volume_class(tmp_path):
    """Spot tables give the crop centres, the class CSV each volume's class."""
    rng = np.random.default_rng(0)
    classes = {"v0": "a", "v1": "b", "v2": "b"}
    for name in classes:
        tifffile.imwrite(tmp_path / f"{name}.tif", rng.random((12, 12, 12), dtype=np.float32))
        (tmp_path / f"{name}.csv").write_text("z,y,x\n6,6,6\n4,5,7\n")
    rows = "".join(f"{n},{c}\n" for n, c in classes.items())
    (tmp_path / "classes.csv").write_text("sample,class\n" + rows)
    config = parse_config([tmp_path], plan="points", crop=6, context=0, split="1")
    manifest = shard(config, tmp_path / "out").manifest
    assert manifest["class_names"] == ["a", "b"] and manifest["counts"]["train"] == 6
    for tar in (tmp_path / "out").glob("train-*.tar"):
        for sample in iter_tar(tar):
            expected = ["a", "b"].index(classes[sample["json"]["source"]])
            assert sample["cls"] == sample["json"]["label"] == expected


def test_integer_spot_labels_stay_class_ids_across_source_folders(tmp_path):
    rng = np.random.default_rng(0)
    for folder, labels in (("one", (0, 10)), ("two", (2, 0))):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / f"{folder}.tif", rng.random((12, 12, 12), np.float32))
        rows = "".join(f"{3 + 5 * i},6,6,{lab}\n" for i, lab in enumerate(labels))
        (tmp_path / folder / f"{folder}.csv").write_text("z,y,x,label\n" + rows)
    config = parse_config(
        [tmp_path / "one", tmp_path / "two"], plan="points", crop=6, context=0, split="1"
    )
    manifest = shard(config, tmp_path / "out").manifest
    assert manifest["class_names"] == [str(i) for i in range(11)]
    stored = {}
    for tar in (tmp_path / "out").glob("train-*.tar"):
        for sample in iter_tar(tar):
            stored[(sample["json"]["source"], sample["json"]["centre"][0])] = sample["cls"]
    assert stored == {("one", 3): 0, ("one", 8): 10, ("two", 3): 2, ("two", 8): 0}


def test_unknown_particle_name(tmp_path):
    from tests.shard.conftest import write_copick

    root = write_copick(
        tmp_path / "proj", particles={"ribosome": 150.0}, picks={"ferritin": [(5, 5, 5)]}
    )
    with pytest.raises(BadLabels, match=r"ferritin"):
        shard(parse_config([root], plan="points", crop=4, split="1"), tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_unusable_options_name_the_value(tmp_path):
    with pytest.raises(BadOption, match="plan='tiles'"):
        parse_config([tmp_path], plan="tiles")
    with pytest.raises(BadOption, match="context='wide'"):
        parse_config([tmp_path], context="wide")
    with pytest.raises(BadOption, match="shard_size=0"):
        parse_config([tmp_path], shard_size=0)


def test_regions_without_picks_ask_for_crops_per_region_and_write_nothing(tmp_path):
    """A stack and its mask on the regions plan: no pick to centre a crop on, so it says what to
    give (as a user sharding segmentation data first meets it), and writes nothing."""
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "stack.tif", np.zeros((8, 16, 16), np.uint16))
    tifffile.imwrite(src / "stack_mask.tif", np.ones((8, 16, 16), np.uint8))
    config = parse_config([src], plan="regions", crop=8, split="1")
    with pytest.raises(ShardError, match=r"--crops-per-region N \(N crops of each volume"):
        shard(config, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    again = parse_config([src], plan="regions", crop=8, crops_per_region=3, split="1")
    assert shard(again, tmp_path / "out").manifest["task"] == "segmentation"


@pytest.mark.parametrize("processes", [False, True])
def test_local_threads_and_processes_write_identical_shards(tmp_path, processes):
    src = _many_sources(tmp_path, n=4)
    config = parse_config([src], crop=8, context=1, split="1", shard_size=4)
    a = shard(config, tmp_path / "a", workers=1).manifest
    b = shard(config, tmp_path / "b", workers=2, processes=processes).manifest
    assert a["splits"] == b["splits"]


def test_distributed_cluster(tmp_path):
    from distributed import LocalCluster

    src = _many_sources(tmp_path, n=4)
    config = parse_config([src], crop=8, context=1, split="1", shard_size=4)
    # a region set's statistics are gathered by its tasks and travel back with their records
    regions = parse_config(
        [src], plan="regions", crop=8, crops_per_region=2, split="1", shard_size=1
    )
    local = shard(config, tmp_path / "local").manifest
    local_regions = shard(regions, tmp_path / "local-regions").manifest
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = shard(config, tmp_path / "remote", scheduler=cluster.scheduler_address).manifest
        address = cluster.scheduler_address
        remote_regions = shard(regions, tmp_path / "remote-regions", scheduler=address).manifest
        again = shard(config, tmp_path / "remote", scheduler=address)  # finished: keeps all
    assert again.written == [] and sorted(again.skipped) == sorted(shard_records(remote))
    assert again.manifest["splits"] == remote["splits"]
    assert remote["splits"] == local["splits"]
    assert verify(tmp_path / "remote") == []
    assert not os.path.exists(tmp_path / "remote" / ".streamvol")
    assert remote_regions["splits"] == local_regions["splits"]
    assert remote_regions["stats"] == local_regions["stats"]
    assert remote_regions["stats"] == pytest.approx(local["stats"], rel=1e-9)


def test_context_auto_follows_the_augmentation(tmp_path, volume):
    from streamvol.augment import Augment

    path = _write("npy", tmp_path, volume)
    flips = parse_config([path], crop=8, augment="flips", split="1")
    assert flips.margin_for() == (0, 0, 0)
    default = parse_config([path], crop=8, augment="default", max_shift=1, split="1")
    assert default.margin_for() == tuple(m + 1 for m in Augment.preset("default").margin(8))
    anisotropic = Augment.preset("default").on_voxels((300, 100, 100)).margin(8)
    assert default.margin_for((300, 100, 100)) == tuple(m + 1 for m in anisotropic)
    context = parse_config([path], crop=8, context=3, split="1")
    assert context.margin_for() == context.margin_for((300, 100, 100)) == (3, 3, 3)


def test_intensity_stats_equal_numpy_over_every_chunk(tmp_path):
    """Moments and percentiles over a chunked zarr volume (edge chunks partial) equal numpy's
    over the whole array (small volumes: the percentile subsample is every voxel)."""
    from streamvol.io import open_volume
    from streamvol.shard.manifest import intensity_stats

    rng = np.random.default_rng(3)
    vols = [rng.gamma(2.0, 3.0, shape).astype("float32") for shape in ((9, 11, 13), (7, 8, 9))]
    opened = []
    for i, vol in enumerate(vols):
        path = str(tmp_path / f"v{i}.zarr")
        zarr.create_array(path, shape=vol.shape, chunks=(4, 5, 6), dtype=vol.dtype)[:] = vol
        opened.append(open_volume(path))
    stats = intensity_stats(opened)
    every = np.concatenate([v.ravel() for v in vols]).astype(np.float64)
    assert stats["mean"] == pytest.approx(every.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(every.std(), rel=1e-6)
    assert (stats["min"], stats["max"]) == (every.min(), every.max())
    assert [stats["p0_5"], stats["p99_5"]] == pytest.approx(np.percentile(every, [0.5, 99.5]))


def _sample_folders(tmp_path, classes: dict[str, str], masks: bool = False):
    rng = np.random.default_rng(0)
    for name in classes:
        volumes = {"raw": rng.random((4, 8, 8)).astype(np.float32)}
        if masks:
            volumes["mask"] = (volumes["raw"] > 0.5).astype(np.uint8)
        for part, volume in volumes.items():
            (tmp_path / "data" / name / part).mkdir(parents=True)
            tifffile.imwrite(
                tmp_path / "data" / name / part / "stack.tif", volume, photometric="minisblack"
            )
    rows = "".join(f"{name},{cls}\n" for name, cls in classes.items())
    (tmp_path / "classes.csv").write_text(f"sample,class\n{rows}")
    return tmp_path / "data"


def test_a_class_training_never_sees_is_warned_and_recorded(tmp_path):
    """Whole samples are dealt: with three samples in three splits, a class is missing from
    train, and of folds, a class of one sample is in one fold only. The sharder says so, names
    the class, and records it in the manifest."""
    from streamvol.errors import SplitWarning

    data = _sample_folders(tmp_path, {"a": "round", "b": "round", "c": "flat"})
    options = dict(plan="sample", crop=4, classes=tmp_path / "classes.csv")
    with pytest.warns(SplitWarning) as caught:
        result = shard(parse_config([data], split="0.6,0.2,0.2", **options), tmp_path / "split")
    counts = result.manifest["class_counts"]
    (missing,) = [name for name in ("round", "flat") if not counts["train"].get(name)]
    held = [split for split in ("val", "test") if counts[split].get(missing)]
    message = f"class {missing!r}: crops in {' and '.join(held)} but none in train, so "
    assert [str(w.message) for w in caught if message in str(w.message)]
    assert [w for w in result.manifest["split"]["warnings"] if w.startswith(message)]
    with pytest.warns(SplitWarning, match=r"class 'flat': every crop in fold\d, so the run"):
        folds = shard(parse_config([data], folds=2, **options), tmp_path / "folds")
    assert any(w.startswith("class 'flat'") for w in folds.manifest["split"]["warnings"])

    data = _sample_folders(
        tmp_path / "common", {k: "round" if k in "ace" else "flat" for k in "abcdef"}
    )
    config = parse_config(
        [data], split="0.6,0.2,0.2", plan="sample", crop=4, classes=data.parent / "classes.csv"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        result = shard(config, tmp_path / "common-set")
    assert result.manifest["split"]["warnings"] == []
    assert result.manifest["class_counts"]["train"] == {"round": 2, "flat": 2}

    # a segmentation set learns its masks: the samples' classes ride along, untrained
    data = _sample_folders(tmp_path / "seg", {"a": "round", "b": "round", "c": "flat"}, True)
    config = parse_config(
        [data], split="0.6,0.2,0.2", plan="grid", crop=4, classes=data.parent / "classes.csv"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        result = shard(config, tmp_path / "seg-set")
    assert result.manifest["task"] == "segmentation" and result.manifest["split"]["warnings"] == []
