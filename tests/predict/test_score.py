"""``score`` from files against a case counted by hand, with the CZII rules written out here:
duplicates, one candidate in reach of two references, a candidate exactly at half the radius,
and an experiment absent from the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from streamvol.cli import app
from streamvol.errors import BadLabels
from streamvol.predict import score_picks, write_copick_config, write_copick_picks

# (experiment, particle type, x, y, z) in Angstrom
REFERENCE = [
    # apo-ferritin, radius 60 -> reach 30: two references 50 A apart
    ("E1", "apo-ferritin", 100, 100, 100),
    ("E1", "apo-ferritin", 150, 100, 100),
    # ribosome, radius 150 -> reach 75
    ("E1", "ribosome", 1000, 1000, 500),
    ("E1", "ribosome", 2000, 1000, 500),
    ("E1", "ribosome", 3000, 1000, 500),
    # thyroglobulin, radius 130: never predicted
    ("E1", "thyroglobulin", 500, 500, 500),
    # beta-galactosidase, radius 90 -> reach 45
    ("E2", "beta-galactosidase", 300, 300, 300),
]
PREDICTED = [
    ("E1", "apo-ferritin", 125, 100, 100),  # 25 A from both references: finds both
    ("E1", "ribosome", 1000, 1000, 575),  # exactly 75 A from the first: found (inclusive)
    ("E1", "ribosome", 2010, 1000, 500),  # the second
    ("E1", "ribosome", 2000, 1020, 500),  # the second again: a duplicate
    ("E1", "ribosome", 3000, 1000, 576),  # 76 A from the third: a miss
    ("E1", "virus-like-particle", 0, 0, 0),  # a type without references: not scored
    ("E2", "beta-galactosidase", 300, 300, 340),  # 40 A: found
    ("E2", "apo-ferritin", 10, 10, 10),  # scored type, no reference in E2: false positive
    ("E3", "ribosome", 1000, 1000, 500),  # E3 is not in the reference: dropped
    ("E3", "ribosome", 1000, 1000, 500),
]


def f4(tp: int, fp: int, fn: int) -> float:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 17 * p * r / (16 * p + r) if p + r else 0.0


# Counted by hand. apo-ferritin: E1 one candidate finds both references, TP 2 and FP 1 - 2 = -1
# (the challenge's FP = candidates - TP); E2 FP 1; totals TP 2, FP 0, FN 0.
# ribosome: found the first (at 75 A) and the second (twice), missed the third: TP 2, FP 2, FN 1.
# thyroglobulin: TP 0, FP 0, FN 1. beta-galactosidase: TP 1.
COUNTS = {
    "apo-ferritin": (2, 0, 0),
    "ribosome": (2, 2, 1),
    "thyroglobulin": (0, 0, 1),
    "beta-galactosidase": (1, 0, 0),
}
WEIGHTS = {"apo-ferritin": 1, "ribosome": 1, "thyroglobulin": 2, "beta-galactosidase": 2}
EXPECTED = sum(WEIGHTS[n] * f4(*c) for n, c in COUNTS.items()) / 7  # CZII weights sum to 7


def _csv(path, rows):
    lines = ["id,experiment,particle_type,x,y,z,score"]
    lines += [f"{i},{e},{t},{x},{y},{z},0.5" for i, (e, t, x, y, z) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _copick(root, rows):
    by = {}
    for e, t, x, y, z in rows:
        by.setdefault((e, t), []).append((z, y, x))
    for (e, t), zyx in by.items():
        write_copick_picks(root, e, t, np.asarray(zyx, float))
    return root


def test_hand_counted_case_from_csv_and_copick(tmp_path):
    assert f4(*COUNTS["ribosome"]) == pytest.approx(17 * (1 / 3) / (8 + 2 / 3))
    ref = _csv(tmp_path / "ref.csv", REFERENCE)
    for pred in (_csv(tmp_path / "pred.csv", PREDICTED), _copick(tmp_path / "proj", PREDICTED)):
        report = score_picks(pred, ref, out=tmp_path / "s.json")
        got = {n: (r["tp"], r["fp"], r["fn"]) for n, r in report["per_type"].items()}
        assert got == COUNTS
        assert report["score"] == pytest.approx(EXPECTED)
        assert report["experiments"] == {
            "scored": ["E1", "E2"],
            "dropped": ["E3"],
            "unpredicted": [],
        }
        assert json.loads((tmp_path / "s.json").read_text())["score"] == pytest.approx(EXPECTED)
    flipped = score_picks(ref, _copick(tmp_path / "refproj", REFERENCE))
    # the reference against itself: F 1 for every type it has; the weights of the types it
    # lacks (virus-like-particle 1, beta-amylase 0) still count in the total of 7
    assert flipped["score"] == pytest.approx(6 / 7)


def test_weights_and_radii_come_from_the_reference_copick_config(tmp_path):
    ref = _copick(tmp_path / "ref", REFERENCE)
    radii = {"apo-ferritin": 60.0, "ribosome": 150.0, "thyroglobulin": 130.0}
    radii["beta-galactosidase"] = 90.0
    write_copick_config(ref, radii, weights={"thyroglobulin": 0.0})
    pred = _csv(tmp_path / "pred.csv", [r for r in PREDICTED if r[1] != "virus-like-particle"])
    report = score_picks(pred, ref)
    weights = {**WEIGHTS, "thyroglobulin": 0}  # from the config; the others from CZII's table
    expected = sum(weights[n] * f4(*c) for n, c in COUNTS.items()) / sum(weights.values())
    assert report["score"] == pytest.approx(expected)


def _predict_folder(root, rows, radii):
    """What ``predict`` writes: copick picks, a config naming only the run's types (with the
    run's radii) and the same picks as ``picks.csv``."""
    _copick(root, rows)
    write_copick_config(root, radii)
    _csv(root / "picks.csv", rows)
    return root


def test_a_predict_folder_scores_as_its_picks_csv(tmp_path):
    """The folder's config (the run's types only, a radius the run was trained with) neither
    changes the weights nor the reach: the CZII table's, as for its picks.csv."""
    ref = _csv(tmp_path / "ref.csv", REFERENCE)
    rows = [r for r in PREDICTED if r[1] == "ribosome"]
    pred = _predict_folder(tmp_path / "pred", rows, {"ribosome": 100.0})  # reach 50, not 75
    folder, table = score_picks(pred, ref), score_picks(pred / "picks.csv", ref)
    for report in (folder, table):
        assert report["per_type"]["ribosome"]["max_distance"] == 75.0
        assert report["per_type"]["ribosome"]["tp"] == COUNTS["ribosome"][0]
        # REF's types the run never predicted are missed, not refused
        assert report["per_type"]["apo-ferritin"]["fn"] == 2
        assert report["weight_total"] == 7.0
    assert folder["score"] == pytest.approx(table["score"])
    assert folder["score"] == pytest.approx(f4(*COUNTS["ribosome"]) / 7)


def test_a_predict_folder_gives_the_radius_of_a_type_of_its_own(tmp_path):
    """A type no reference config or CZII table names takes the folder's radius; given as a
    CSV, the same picks are refused with the type named."""
    ref = _csv(tmp_path / "ref.csv", [("E1", "blob", 100, 100, 100)])
    rows = [("E1", "blob", 100, 100, 130)]  # 30 A: found with radius 80 (reach 40)
    pred = _predict_folder(tmp_path / "pred", rows, {"blob": 80.0})
    report = score_picks(pred, ref)
    assert report["particles"] == {"blob": {"radius": 80.0, "weight": 1.0}}
    assert report["score"] == pytest.approx(1.0)
    with pytest.raises(BadLabels, match=r"no radius for particle types \['blob'\].*--radius"):
        score_picks(pred / "picks.csv", ref)
    assert score_picks(pred / "picks.csv", ref, radius={"blob": 80.0})["score"] == report["score"]


def test_cli_prints_and_writes(tmp_path):
    """The report, and where it went: each path on a line of its own, whole however long (rich
    folds lines at the width, paths included) and as named (a ``[`` is not markup)."""
    ref = _csv(tmp_path / "ref.csv", REFERENCE)
    pred = _copick(tmp_path / "proj", PREDICTED)
    folder = tmp_path / ("a_long_folder_name_" * 4 + "[v2]")
    folder.mkdir()
    result = CliRunner().invoke(
        app, ["score", str(pred), str(ref), "--out", str(folder / "o.json")]
    )
    assert result.exit_code == 0, result.output
    assert "ribosome" in result.output and f"{EXPECTED:.4f}" in result.output
    assert "experiments scored: 2 (E1, E2)" in result.output
    assert "not scored: PRED's experiments E3 are not in REF" in result.output
    assert json.loads((folder / "o.json").read_text())["per_type"]["ribosome"]["fn"] == 1
    lines = result.output.splitlines()
    assert lines[-2:] == [f"report: {folder / 'o.json'}", f"plot: {folder / 'o.png'}"]
    assert (folder / "o.png").read_bytes()[:4] == b"\x89PNG"
    partial = _csv(tmp_path / "e1.csv", [r for r in PREDICTED if r[0] == "E1"])
    missing = CliRunner().invoke(
        app, ["score", str(partial), str(ref), "--out", str(tmp_path / "p.json")]
    )
    assert "PRED has no picks for REF's experiments E2: every particle there counts as missed" in (
        " ".join(missing.output.split())
    )
    many = _csv(tmp_path / "many.csv", [(f"E{k}", "ribosome", 10, 10, 10) for k in range(1, 11)])
    one = CliRunner().invoke(
        app, ["score", str(partial), str(many), "--out", str(tmp_path / "m.json")]
    )
    assert "experiments E2, E3, E4, E5, E6, E7, E8, E9 and 1 more: every" in " ".join(
        one.output.split()
    )  # the JSON lists them all
    assert json.loads((tmp_path / "m.json").read_text())["experiments"]["unpredicted"][-1] == "E10"
    bad = CliRunner().invoke(app, ["score", str(tmp_path / "nothing.txt"), str(ref)])
    assert bad.exit_code == 1 and "expected a picks CSV" in bad.output


def test_predictions_written_into_the_reference_project(tmp_path):
    """``predict --out PROJECT`` puts the model's picks beside the curated ones: scored as one
    set, the predictions would count as references, so it is refused until --user and
    --ref-user say whose picks are which."""
    proj = _copick(tmp_path / "proj", PREDICTED)
    for (e, t), rows in _by_type(REFERENCE).items():
        doc = {"pickable_object_name": t, "user_id": "curation", "session_id": "1"}
        doc["points"] = [{"location": {"x": x, "y": y, "z": z}} for x, y, z in rows]
        path = proj / "overlay" / "ExperimentRuns" / e / "Picks" / f"curation_1_{t}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
    out = str(tmp_path / "o.json")
    refused = CliRunner().invoke(app, ["score", str(proj), str(proj), "--out", out])
    assert refused.exit_code == 1 and "from 2 owners" in refused.output
    chosen = ["--user", "streamvol", "--ref-user", "curation"]
    result = CliRunner().invoke(app, ["score", str(proj), str(proj), "--out", out, *chosen])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.json").read_text())["score"] == pytest.approx(EXPECTED)
    by_session = score_picks(proj, proj, session="0", ref_session="1")
    assert by_session["score"] == pytest.approx(EXPECTED)


def _by_type(rows):
    by = {}
    for e, t, x, y, z in rows:
        by.setdefault((e, t), []).append((x, y, z))
    return by


def test_volumes_with_spot_tables_are_a_reference(tmp_path):
    """Volumes and their spot tables (voxels) score as the same picks in Angstrom would: the
    hand-counted case, with each experiment an MRC file of 100 A voxels."""
    import mrcfile

    ref = tmp_path / "ref"
    ref.mkdir()
    for experiment in ("E1", "E2"):
        with mrcfile.new(ref / f"{experiment}.mrc") as mrc:
            mrc.set_data(np.zeros((8, 12, 32), np.float32))
            mrc.voxel_size = 100.0
        rows = [r for r in REFERENCE if r[0] == experiment]
        table = "".join(f"{z / 100},{y / 100},{x / 100},{t}\n" for _, t, x, y, z in rows)
        (ref / f"{experiment}.csv").write_text("z,y,x,label\n" + table)
    report = score_picks(_csv(tmp_path / "pred.csv", PREDICTED), ref)
    assert {n: (r["tp"], r["fp"], r["fn"]) for n, r in report["per_type"].items()} == COUNTS
    assert report["score"] == pytest.approx(EXPECTED)
    assert report["experiments"]["scored"] == ["E1", "E2"]
    np.save(ref / "E3.npy", np.zeros((8, 12, 32), np.float32))  # no voxel size to read
    (ref / "E3.csv").write_text("z,y,x,label\n1,1,1,ribosome\n")
    with pytest.raises(BadLabels, match=r"E3\.npy: records no voxel size"):
        score_picks(tmp_path / "pred.csv", ref)


def test_types_of_ones_own_score_with_the_radius_given(tmp_path):
    """Spot tables of types no copick config or CZII table names: refused until --radius gives
    their radii; then scored among themselves (the six CZII weights do not divide the score)."""
    import mrcfile

    ref = tmp_path / "ref"
    ref.mkdir()
    with mrcfile.new(ref / "v0.mrc") as mrc:
        mrc.set_data(np.zeros((8, 8, 8), np.float32))
        mrc.voxel_size = 10.0
    (ref / "v0.csv").write_text("z,y,x,label\n2,2,2,a\n6,6,6,b\n")  # 20 A and 60 A
    pred = _csv(tmp_path / "pred.csv", [("v0", "a", 20, 20, 28), ("v0", "b", 60, 60, 68)])
    with pytest.raises(BadLabels, match=r"no radius for particle types \['a', 'b'\].*--radius"):
        score_picks(pred, ref)
    every = score_picks(pred, ref, radius={"*": 16.0})  # reach 8 A: both found
    assert {n: r["tp"] for n, r in every["per_type"].items()} == {"a": 1, "b": 1}
    assert every["weight_total"] == 2.0 and every["score"] == pytest.approx(1.0)
    result = CliRunner().invoke(
        app,
        ["score", str(pred), str(ref), "--radius", "a=16,b=10", "--out", str(tmp_path / "s.json")],
    )  # b's reach 5 A: missed
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["particles"] == {
        "a": {"radius": 16.0, "weight": 1.0},
        "b": {"radius": 10.0, "weight": 1.0},
    }
    assert report["score"] == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(BadLabels, match=r"no radius for particle types \['b'\]"):
        score_picks(pred, ref, radius={"a": 16.0})
