"""Copick projects as they come: a model's picks beside the curated ones, several tomograms and
voxel spacings per run. ``shard`` refuses to join picks of one type from several owners until
``--user-id`` / ``--session-id`` choose, reads the ``--tomogram`` and ``--voxel-spacing`` asked
for, and records the choices; ``predict`` reads the tomograms its run's shards read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from streamvol import synth
from streamvol.cli import app
from streamvol.io import copick_picks, discover
from streamvol.predict import score_picks, write_copick_picks
from streamvol.shard import read_manifest

runner = CliRunner()
SHARD = ["--plan", "points", "--crop", "16", "--context", "0", "--augment", "flips"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, int]:
    """Three synthetic runs with their curated picks and, written into the project as
    ``predict --out PROJECT`` would, a model's picks of every type (moved 40 A in x)."""
    root = tmp_path_factory.mktemp("copick") / "project"
    synth.make("tomograms", root, n=3, size=(40, 64, 64), seed=3)
    curated = copick_picks(root)
    for run, types in curated.items():
        for particle, zyx in types.items():
            write_copick_picks(root, run, particle, np.clip(zyx + np.array([0, 0, 40]), 0, 630))
    return root, sum(len(zyx) for types in curated.values() for zyx in types.values())


def _shard(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["shard", *args, *SHARD])
    return result.exit_code, result.output


def test_picks_of_two_owners_are_refused_then_chosen_or_joined(project, tmp_path):
    root, curated = project
    code, output = _shard(str(root), "--out", str(tmp_path / "a"))
    assert code == 1
    assert "picks of 'apo-ferritin' from 2 owners" in " ".join(output.split())
    assert not (tmp_path / "a").exists()  # refused before anything is written

    code, output = _shard(str(root), "--out", str(tmp_path / "a"), "--user-id", "curation")
    assert code == 0, output
    manifest = read_manifest(tmp_path / "a")
    assert sum(len(r["keys"]) for recs in manifest["splits"].values() for r in recs) == curated
    assert manifest["config"]["user_id"] == ["curation"]
    files = [Path(p).name for s in manifest["sources"] for p in s["points"]]
    assert files and not any(f.startswith("streamvol_") for f in files)

    both = ["--user-id", "curation", "--user-id", "streamvol"]
    code, output = _shard(str(root), "--out", str(tmp_path / "b"), *both)
    assert code == 0, output
    manifest = read_manifest(tmp_path / "b")
    assert sum(len(r["keys"]) for recs in manifest["splits"].values() for r in recs) == 2 * curated

    code, output = _shard(str(root), "--out", str(tmp_path / "a"), "--user-id", "streamvol")
    assert code == 1 and "--overwrite" in output  # another choice is another set


def test_tomogram_and_voxel_spacing_are_chosen_and_recorded(project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(project[0], root)
    for run in (root / "static" / "ExperimentRuns").iterdir():
        spacing = run / "VoxelSpacing10.000"
        shutil.copytree(spacing / "denoised.zarr", spacing / "wbp.zarr")
        shutil.copytree(spacing, run / "VoxelSpacing20.000")
    out = str(tmp_path / "s")
    code, output = _shard(str(root), "--out", out, "--user-id", "curation")
    assert code == 1 and "several voxel spacings (10, 20)" in output
    assert "--voxel-spacing" in output
    choice = ["--voxel-spacing", "20", "--tomogram", "wbp", "--user-id", "curation"]
    code, output = _shard(str(root), "--out", out, *choice)
    assert code == 0, output
    manifest = read_manifest(out)
    assert {Path(s["path"]).relative_to(root).parts[3:] for s in manifest["sources"]} == {
        ("VoxelSpacing20.000", "wbp.zarr")
    }
    assert manifest["config"]["tomogram"] == "wbp"
    assert manifest["config"]["voxel_spacing"] == 20.0
    assert [s.image.name for s in discover(root, voxel_spacing=20).sources] == ["denoised.zarr"] * 3


def test_voxel_spacing_of_a_plain_volume_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((8, 16, 16), np.uint16))
    code, output = _shard(str(tmp_path / "stack.tif"), "--out", str(tmp_path / "o"),
                          "--voxel-spacing", "10")  # fmt: skip
    assert code == 1
    assert "--voxel-spacing 10.0: chooses a copick run's VoxelSpacing folder" in output
    assert "--voxel-size" in output
    code, output = _shard(str(tmp_path / "stack.tif"), "--out", str(tmp_path / "o"),
                          "--user-id", "curation")  # fmt: skip
    assert code == 1 and "user_id choose among a copick project's pick files" in output


def test_a_copick_config_of_any_name_with_its_roots_elsewhere(project, tmp_path):
    """A project as copick's docs lay it out: tomograms on a share (``static_root``, a
    ``local://`` URL), picks in the user's folder (``overlay_root``, relative to the config),
    named by its config file; ``shard`` and ``score`` take the config's path."""
    import json

    root, curated = project
    shutil.copytree(root / "static", tmp_path / "share")
    shutil.copytree(root / "overlay", tmp_path / "bob" / "picks")
    doc = json.loads((root / "copick_config.json").read_text())
    doc.update(static_root=f"local://{tmp_path / 'share'}", overlay_root="picks")
    config = tmp_path / "bob" / "my-project.json"
    config.write_text(json.dumps(doc))
    code, output = _shard(str(config), "--out", str(tmp_path / "s"), "--user-id", "curation")
    assert code == 0, output
    manifest = read_manifest(tmp_path / "s")
    assert sum(len(r["keys"]) for recs in manifest["splits"].values() for r in recs) == curated
    assert all(s["path"].startswith(str(tmp_path / "share")) for s in manifest["sources"])
    chosen = ["--user", "streamvol", "--ref-user", "curation", "--out", str(tmp_path / "o.json")]
    result = runner.invoke(app, ["score", str(config), str(config), *chosen])
    assert result.exit_code == 0, result.output
    same = score_picks(root, root, user="streamvol", ref_user="curation")  # the folder's way
    assert json.loads((tmp_path / "o.json").read_text())["per_type"] == same["per_type"]
    assert 0 < same["score"] < 1  # apo-ferritin moved 40 A is out of reach (30 A), ribosome not
