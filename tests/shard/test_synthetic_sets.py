"""Each synthetic data set shards with the plan that fits it, through the real CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from streamvol import synth
from streamvol.cli import app
from streamvol.io import discover, load_points, open_volume
from streamvol.shard import read_manifest
from streamvol.shard.plan import crop_box
from streamvol.stream.decode import iter_tar
from streamvol.stream.inspect import verify

runner = CliRunner()


def _samples(folder):
    manifest = read_manifest(folder)
    for shards in manifest["splits"].values():
        for rec in shards:
            yield from iter_tar(folder / rec["name"])


def _invoke(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def _shard_spots(data, out, *options):
    """The spot candidates, one 9 x 11 x 11 crop each, no margin."""
    plan = ("--plan", "points", "--crop", "9,11,11", "--context", "0")
    return _invoke("shard", data["spots"], "--out", out, *plan, *options)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {
        "tomograms": synth.make("tomograms", root / "tomo", n=2, size=(40, 64, 64)),
        "nuclei": synth.make("nuclei", root / "nuclei", n=9, size=(8, 24, 24)),
        "spots": synth.make("spots", root / "spots", n=40, size=(16, 48, 48)),
    }


def test_tomograms_points_plan(data, tmp_path):
    out = tmp_path / "tomo"
    _invoke(
        "shard",
        data["tomograms"],
        "--out",
        out,
        "--plan",
        "points",
        "--crop",
        "16",
        "--negatives",
        "0.5",
        "--split",
        "0.5,0.5",
        "--shard-size",
        "10",
    )
    manifest = read_manifest(out)
    dataset = discover(data["tomograms"])
    assert manifest["class_names"] == ["background", *dataset.class_names]
    from streamvol.augment import Augment

    # --context auto: what the default augmentation needs, at least the free-rotation sphere
    assert manifest["margin"] == list(Augment.preset("default").margin(16))
    assert all(m >= 6 for m in manifest["margin"])  # ceil(16 * (sqrt(3) - 1) / 2)
    per_source = [
        len(load_points(spec, open_volume(spec.image), dataset).zyx) for spec in dataset.sources
    ]
    picks_total = sum(per_source)
    counts = manifest["class_counts"]
    assert sum(v for c in counts.values() for k, v in c.items() if k != "background") == picks_total
    negatives = sum(int(np.floor(0.5 * n + 0.5)) for n in per_source)  # per source, half up
    assert sum(c.get("background", 0) for c in counts.values()) == negatives
    # every positive crop is centred on its pick: the point sits at the block centre
    for sample in _samples(out):
        label = sample["cls"]
        pts = sample["points.npy"]
        assert pts.dtype == np.float32 and pts.shape[1] == 4
        if label > 0:
            centre = np.array(sample["image.npy"].shape) // 2
            dist = np.abs(pts[:, :3] - centre).max(axis=1)
            nearest = pts[np.argmin(dist)]
            assert dist.min() <= 0.5 and int(nearest[3]) == label
        else:
            assert sample["json"]["label"] == 0
    assert manifest["task"] == "classification"
    assert verify(out) == []


def test_nuclei_sample_plan_with_masks(data, tmp_path):
    out = tmp_path / "nuclei"
    _invoke(
        "shard",
        data["nuclei"],
        "--out",
        out,
        "--plan",
        "sample",
        "--crop",
        "8,24,24",
        "--context",
        "0",
        "--folds",
        "3",
    )
    manifest = read_manifest(out)
    assert list(manifest["splits"]) == ["fold0", "fold1", "fold2"]
    with open(data["nuclei"] / "classes.csv") as f:
        classes = {row["sample"]: row["class"] for row in csv.DictReader(f)}
    names = manifest["class_names"]
    seen = set()
    for sample in _samples(out):
        sid = sample["json"]["source"]
        seen.add(sid)
        assert names[sample["cls"]] == classes[sid]
        raw = open_volume(data["nuclei"] / sid / "raw").data.compute()
        mask = open_volume(data["nuclei"] / sid / "mask").data.compute()
        assert np.array_equal(sample["image.npy"], raw)  # crop == whole sample here
        assert np.array_equal(sample["mask.npy"], mask)
    assert seen == set(classes)


def test_nuclei_grid_plan_is_segmentation(data, tmp_path):
    out = tmp_path / "seg"
    _invoke(
        "shard",
        data["nuclei"],
        "--out",
        out,
        "--plan",
        "grid",
        "--crop",
        "8,12,12",
        "--context",
        "0",
        "--split",
        "0.6,0.2,0.2",
    )
    manifest = read_manifest(out)
    assert manifest["task"] == "segmentation"
    assert "mask.npy" in manifest["members"]
    assert sum(manifest["counts"].values()) == 9 * 4


def test_spots_points_plan_exact_crops(data, tmp_path):
    out = tmp_path / "spots"
    _shard_spots(data, out, "--split", "0.8,0.2")
    manifest = read_manifest(out)
    volume = open_volume(data["spots"] / "spots.tif").data.compute()
    with open(data["spots"] / "spots.csv") as f:
        rows = {(int(r["z"]), int(r["y"]), int(r["x"])): r["label"] for r in csv.DictReader(f)}
    keys = set()
    for sample in _samples(out):
        centre = tuple(sample["json"]["centre"])
        keys.add(centre)
        box = crop_box(centre, (9, 11, 11), (0, 0, 0))
        expected = volume[tuple(slice(a, b) for a, b in box)]
        assert np.array_equal(sample["image.npy"], expected)
        assert manifest["class_names"][sample["cls"]] == rows[centre]
    assert keys == set(rows)
    assert manifest["split"]["warnings"]  # one source: split by spatial slabs, and it says so


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["shard", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "missing" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["shard", str(tmp_path), "--crop", "1,2"])
    assert result.exit_code == 1 and "1,2" in result.output


def test_inspect_verify_and_preview(data, tmp_path):
    out = tmp_path / "spots"
    _shard_spots(data, out, "--split", "1", "--shard-size", "16")
    result = _invoke("inspect", out, "--verify", "--preview", tmp_path / "p.png", "--n", "6")
    assert "verified" in result.output
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    victim = sorted(out.glob("*.tar"))[1]
    victim.write_bytes(victim.read_bytes()[:-1024])
    result = runner.invoke(app, ["inspect", str(out), "--verify"])
    assert result.exit_code == 1
    assert victim.name in result.output


def test_demo_runs_end_to_end(tmp_path):
    result = _invoke("demo", "--out", tmp_path / "demo")
    assert "verified" in result.output
    demo, lines = tmp_path / "demo", result.output.splitlines()
    for kind in ("nuclei", "tomograms"):
        assert verify(demo / "shards" / kind) == []
        assert (demo / f"{kind}-preview.png").is_file()
        # the paths whole on one line, to copy, however long the folder's name
        shown = f"{kind}: shards {demo / 'shards' / kind}, preview {demo / kind}-preview.png"
        assert shown in lines
