"""``--radius``: particle radii for spot tables, which carry none, and over a copick config's.
A detection set lacking a radius for a type, or a voxel size, is warned of when sharded and
refused by ``train``; with them, a picker trains on MRC volumes and their spot tables."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadInput, BadOption
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.shard.config import parse_radius
from streamvol.stream.inspect import describe
from streamvol.train import TrainConfig, Trainer

from .conftest import write_copick

SHAPE = (24, 40, 40)
TINY = {
    "task": "detection",
    "model": "unet3d",
    "model_options": {"base_width": 4, "depth": 2},
    "epochs": 1,
    "batch_size": 4,
    "workers": 0,
    "augment": "flips",
}
ROWS = [(8, 10, 10, "ring"), (12, 30, 28, "ring"), (16, 20, 12, "dot"), (10, 28, 30, "dot")]


def _stacks(root, suffix: str = ".mrc"):
    """Two volumes of ``SHAPE`` (MRC at 10 A, or .npy without a voxel size), each with a spot
    table of two types in voxels."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        data = rng.normal(size=SHAPE).astype(np.float32)
        if suffix == ".mrc":
            with mrcfile.new(root / f"t{i}.mrc") as mrc:
                mrc.set_data(data)
                mrc.voxel_size = 10.0
        else:
            np.save(root / f"t{i}.npy", data)
        table = "z,y,x,label\n" + "".join(f"{z},{y},{x},{n}\n" for z, y, x, n in ROWS)
        (root / f"t{i}.csv").write_text(table)
    return root


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("60", (("*", 60.0),)),
        (60, (("*", 60.0),)),
        ("ring=150, dot=45.5", (("dot", 45.5), ("ring", 150.0))),
        ({"a-b": 3}, (("a-b", 3.0),)),
    ],
)
def test_radius_values_parse(text, pairs):
    assert parse_radius(text) == pairs


@pytest.mark.parametrize(
    "text", ["", "0", "-5", "nan", "ring=", "ring=x", "ring=1,ring=2", "60,a=3"]
)
def test_bad_radius_values_are_refused(text):
    with pytest.raises(BadOption, match="radius="):
        parse_radius(text)


def test_a_detection_set_without_radii_is_warned_of_and_train_refuses_it(tmp_path):
    """It streams (negatives keep a voxel's distance), but a picker cannot train on it: the
    sharder says so and how to fix it, and ``train`` refuses it in those words."""
    src = _stacks(tmp_path / "src")
    config = parse_config([src], plan="regions", crop=16, split="0.5,0.5,0")
    with pytest.warns(UserWarning, match=r"makes a detection set.*dot, ring have none.*--radius"):
        shard(config, tmp_path / "out")
    assert "radii_angstrom" not in read_manifest(tmp_path / "out")
    assert "radii: none, so `train` refuses" in describe(read_manifest(tmp_path / "out"))[-1]
    with pytest.raises(BadInput, match=r"records none; reshard with --radius"):
        Trainer(TrainConfig(shards=str(tmp_path / "out"), **TINY), tmp_path / "run")
    explicit = parse_config([src], plan="grid", crop=16, split="1", task="detection")
    with pytest.warns(UserWarning, match=r"\(--task detection\), whose targets"):
        shard(explicit, tmp_path / "grid")


def test_one_radius_for_every_type_trains_a_picker(tmp_path):
    src = _stacks(tmp_path / "src")
    config = parse_config(
        [src], plan="regions", crop=16, split="0.5,0.5,0", negatives=1, radius="60"
    )
    shard(config, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest["task"] == "detection"
    assert manifest["radii_angstrom"] == {"dot": 60.0, "ring": 60.0}
    assert manifest["radii_voxels"] == {"dot": 6.0, "ring": 6.0}  # 10 A voxels
    assert describe(manifest)[-1] == "radii: dot 60, ring 60 A"
    train = TrainConfig(shards=str(tmp_path / "out"), **TINY)
    trainer = Trainer(train, tmp_path / "run")
    assert trainer.task.radii_angstrom == (60.0, 60.0)
    report = trainer.fit()
    # thresholds are chosen on the validation volume predicted whole, against its spot table
    assert report["task"] == "detection" and len(report["experiments"]) == 1
    counts = {n: r["tp"] + r["fn"] for n, r in report["per_type"].items()}
    assert counts == {"dot": 2, "ring": 2}


def test_named_radii_replace_a_copick_configs(tmp_path):
    project = write_copick(
        tmp_path / "p",
        particles={"small": 40.0, "large": 80.0},
        picks={"small": [(8, 10, 10)], "large": [(8, 10, 10)]},
    )
    shard(
        parse_config([project], plan="regions", crop=8, split="1", radius="large=120"),
        tmp_path / "o",
    )
    assert read_manifest(tmp_path / "o")["radii_angstrom"] == {"small": 40.0, "large": 120.0}
    with pytest.raises(BadOption, match=r"huge is not a particle type.*large, small"):
        shard(
            parse_config([project], plan="regions", crop=8, split="1", radius="huge=9"),
            tmp_path / "x",
        )


def test_detection_needs_a_voxel_size_to_turn_radii_into_voxels(tmp_path):
    src = _stacks(tmp_path / "src", suffix=".npy")
    common = {"plan": "regions", "crop": 16, "split": "1", "radius": "60"}
    with pytest.warns(UserWarning, match=r"no common voxel size: `train` will refuse it"):
        shard(parse_config([src], **common), tmp_path / "a")
    with pytest.raises(BadInput, match=r"no common voxel size.*reshard with --voxel-size"):
        Trainer(TrainConfig(shards=str(tmp_path / "a"), **TINY), tmp_path / "run")
    shard(parse_config([src], voxel_size="20", **common), tmp_path / "b")
    assert read_manifest(tmp_path / "b")["radii_voxels"] == {"dot": 3.0, "ring": 3.0}


def test_cli_warns_of_the_missing_radii_and_records_given_ones(tmp_path):
    src = _stacks(tmp_path / "src")
    args = ["shard", str(src), "--plan", "regions", "--crop", "16", "--split", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "dot, ring have none" in result.output
    given = [*args, "--out", str(tmp_path / "b"), "--radius", "ring=90,dot=30"]
    result = CliRunner().invoke(app, given)
    assert result.exit_code == 0 and "warning:" not in result.output, result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["radii_angstrom"] == {"dot": 30.0, "ring": 90.0}


def test_a_copick_configs_score_weights_are_validations(tmp_path):
    """Weights a copick config gives (the CZII metric's) reach the manifest and the run's
    weighted F-beta, as ``score`` reads them from a reference; other types keep the CZII table's
    (apo-ferritin 1) or 1."""
    from streamvol.train.detection import weighted_score
    from streamvol.train.setup import detection_task

    project = write_copick(
        tmp_path / "p",
        particles={"apo-ferritin": 60.0, "small": 40.0, "large": 80.0},
        picks={"apo-ferritin": [(8, 4, 4)], "small": [(8, 10, 10)], "large": [(8, 15, 15)]},
    )
    config_path = project / "copick_config.json"
    config = json.loads(config_path.read_text())
    for obj in config["pickable_objects"]:
        obj.update({"small": {"weight": 3}, "large": {"weight": 0}}.get(obj["name"], {}))
    config_path.write_text(json.dumps(config))
    shard(parse_config([project], plan="regions", crop=8, split="1"), tmp_path / "o")
    manifest = read_manifest(tmp_path / "o")
    assert manifest["particle_weights"] == {"small": 3.0, "large": 0.0}
    task = detection_task(TrainConfig(shards=str(tmp_path / "o"), **TINY), manifest)
    weights = dict(zip(task.class_names, task.weights, strict=True))
    assert weights == {"apo-ferritin": 1.0, "small": 3.0, "large": 0.0}
    fbetas = {"apo-ferritin": 0.5, "small": 0.8, "large": 0.1}
    assert weighted_score(task, fbetas) == pytest.approx((0.5 + 3 * 0.8) / 4)


def test_anisotropic_voxels_give_targets_round_in_space(tmp_path):
    """Voxels of 30 x 10 x 10 A: radii in mean voxels (50/3 A), and the spacing that makes
    balls and Gaussians round in space."""
    from streamvol.train.setup import detection_task

    src = tmp_path / "src"
    src.mkdir()
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    with mrcfile.new(src / "t0.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (10.0, 10.0, 30.0)  # x, y, z
    (src / "t0.csv").write_text("z,y,x,label\n8,10,10,ring\n12,30,28,dot\n")
    shard(parse_config([src], plan="regions", crop=16, split="1", radius="60"), tmp_path / "o")
    manifest = read_manifest(tmp_path / "o")
    assert manifest["voxel_size"] == [30.0, 10.0, 10.0]
    task = detection_task(TrainConfig(shards=str(tmp_path / "o"), **TINY), manifest)
    assert task.target.radii == pytest.approx((3.6, 3.6))
    assert task.target.spacing == pytest.approx((1.8, 0.6, 0.6))
