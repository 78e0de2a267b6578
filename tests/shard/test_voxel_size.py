"""--voxel-size: sources whose files record none (TIFF, .npy) get one, picks in Angstrom are
converted with it, and the manifest records it; a file's own is replaced with a warning."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadOption
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.shard.config import parse_voxel_size

runner = CliRunner()


def test_parse_voxel_size():
    assert parse_voxel_size("10") == (10.0, 10.0, 10.0)
    assert parse_voxel_size("20,10,10") == (20.0, 10.0, 10.0)
    assert parse_voxel_size(7.5) == (7.5, 7.5, 7.5)
    for bad in ("0", "1,2", "a", "-3", "nan"):
        with pytest.raises(BadOption, match="voxel_size="):
            parse_voxel_size(bad)


def test_a_tiff_without_one_gets_the_given_voxel_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "stack.tif", np.zeros((8, 16, 16), np.uint16))
    plain = tmp_path / "plain"
    shard(parse_config([src / "stack.tif"], crop=8, context=0, split="1"), plain)
    assert read_manifest(plain)["voxel_size"] is None
    out = tmp_path / "sized"
    args = ["shard", str(src / "stack.tif"), "--out", str(out), "--crop", "8", "--context", "0"]
    result = runner.invoke(app, [*args, "--split", "1", "--voxel-size", "300,100,100"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 shard (" in result.output and "skipped 0 finished ones" in result.output
    manifest = read_manifest(out)
    assert manifest["voxel_size"] == [300.0, 100.0, 100.0]
    assert manifest["sources"][0]["voxel_size"] == [300.0, 100.0, 100.0]
    assert manifest["config"]["voxel_size"] == [300.0, 100.0, 100.0]


def test_a_file_s_own_voxel_size_is_replaced_with_a_warning(tmp_path):
    src = tmp_path / "t.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(np.zeros((8, 16, 16), np.float32))
        mrc.voxel_size = 5.0
    args = ["shard", str(src), "--out", str(tmp_path / "o"), "--crop", "8", "--context", "0"]
    result = runner.invoke(app, [*args, "--split", "1", "--voxel-size", "10"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output
    assert "replaces the voxel size its file records" in result.output
    assert read_manifest(tmp_path / "o")["voxel_size"] == [10.0, 10.0, 10.0]
    result = runner.invoke(app, [*args[:4], str(tmp_path / "p"), *args[5:], "--voxel-size", "x"])
    assert result.exit_code == 1 and "--voxel-size x: expected one positive size" in result.output


def test_sets_made_before_the_options_keep_their_identity(tmp_path):
    """The config digest leaves out the options added later (voxel size; copick tomogram,
    spacing, owners and segmentation; particle radii) while unset, so rerunning an older command
    into its folder still resumes instead of being refused as a different command; set, each
    makes another set."""
    import hashlib
    import json
    from dataclasses import asdict

    config = parse_config([tmp_path], crop=8)
    fields = asdict(config)
    later = (
        "voxel_size", "tomogram", "voxel_spacing", "user_id", "session_id", "segmentation", "radius"
    )  # fmt: skip
    for name in later:
        del fields[name]
    old = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    assert config.digest() == old
    assert parse_config([tmp_path], crop=8, radius=None).digest() == old  # the CLI's unset
    others = [
        parse_config([tmp_path], crop=8, voxel_size="10"),
        parse_config([tmp_path], crop=8, tomogram="wbp"),
        parse_config([tmp_path], crop=8, voxel_spacing=10.0),
        parse_config([tmp_path], crop=8, user_id=["curation"]),
        parse_config([tmp_path], crop=8, session_id=["0"]),
        parse_config([tmp_path], crop=8, segmentation="membrane"),
        parse_config([tmp_path], crop=8, radius="60"),
    ]
    assert len({old, *(c.digest() for c in others)}) == 8


def test_anisotropic_voxels_get_the_margin_of_physical_rotations_everywhere(tmp_path):
    """3:1 voxels and the default augmentation: the sharder stores the margin that turning
    physical space needs (less along z than the voxel grid's, more in-plane), and the loader, the
    trainer's margin check, the preview and the benchmark draw on those voxels (on the grid they
    would refuse the set: its z margin is too small for a grid rotation)."""
    from streamvol.augment import Augment
    from streamvol.stream import open_shards
    from streamvol.stream.inspect import preview_augmented
    from streamvol.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(0, 900, (12, 40, 40), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "stack_mask.tif", rng.integers(0, 2, (12, 40, 40), dtype=np.uint8))
    out = tmp_path / "set"
    args = ["shard", str(tmp_path / "stack.tif"), "--out", str(out), "--plan", "grid"]
    args += ["--crop", "4,16,16", "--split", "1", "--voxel-size", "300,100,100"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    default = Augment.preset("default")
    physical = default.on_voxels((300, 100, 100)).margin((4, 16, 16))
    grid = default.margin((4, 16, 16))
    assert tuple(manifest["margin"]) == physical
    assert physical[0] < grid[0] and physical[1] > grid[1]

    samples = list(open_shards(out, split="train", augment=default, seed=0))
    assert len(samples) == manifest["counts"]["train"] == 3 * 3 * 3
    assert {tuple(s["image"].shape) for s in samples} == {(1, 4, 16, 16)}
    config = TrainConfig(shards=str(out), model="simple_cnn", epochs=1, workers=0, val_split="")
    Trainer(config, tmp_path / "run")  # refuses a set whose margin the augmentation outgrows
    assert preview_augmented(out, tmp_path / "preview.png", "default").is_file()
    bench = ["bench", str(out), "--workers", "0", "--modes", "cpu", "--batches", "1"]
    result = runner.invoke(app, [*bench, "--repeats", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "augment cpu" in result.output


def _imagej(path, z_um, xy_um):
    image = np.zeros((8, 16, 16), np.uint16)
    if z_um is None:
        tifffile.imwrite(path, image)
    else:
        meta = {"spacing": z_um, "unit": "um", "axes": "ZYX"}
        tifffile.imwrite(path, image, imagej=True, resolution=(1 / xy_um, 1 / xy_um), metadata=meta)


def test_sources_of_unknown_or_different_voxel_sizes_are_named_in_a_warning(tmp_path):
    """The set's voxel size decides how augmentation turns its crops: a source without one is
    named when the others' is taken for it, and different ones leave the set without any."""
    src = tmp_path / "src"
    src.mkdir()
    _imagej(src / "a.tif", 0.3, 0.1)
    _imagej(src / "b.tif", None, None)
    config = dict(crop=8, context=0, split="1")
    taken = r"b\.tif records no voxel size; the set's \[3000.0, 1000.0, 1000.0\] Angstrom is taken"
    with pytest.warns(UserWarning, match=taken + " for it"):
        shard(parse_config([src], **config), tmp_path / "one")
    assert read_manifest(tmp_path / "one")["voxel_size"] == pytest.approx([3000, 1000, 1000])
    _imagej(src / "b.tif", 0.2, 0.1)
    with pytest.warns(UserWarning, match="the sources record different voxel sizes") as caught:
        shard(parse_config([src], **config), tmp_path / "two")
    assert "a.tif" in str(caught[0].message) and "b.tif" in str(caught[0].message)
    assert read_manifest(tmp_path / "two")["voxel_size"] is None
