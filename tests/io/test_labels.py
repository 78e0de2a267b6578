"""Label readers: copick picks and configs, class CSVs, spot tables, and Points."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamvol.errors import BadLabels, PointsOutsideVolume
from streamvol.io import (
    ClassTable,
    Points,
    read_class_csv,
    read_copick_config,
    read_copick_picks,
    read_spot_table,
)


def write_picks(
    path: Path,
    locations: list[tuple[float, float, float]],
    *,
    name: str = "ribosome",
    unit: str | None = "angstrom",
    translations: list[tuple[float, float, float]] | None = None,
) -> Path:
    """A copick pick file; locations and translations are (x, y, z) as copick writes them."""
    points = []
    for i, (x, y, z) in enumerate(locations):
        point: dict[str, Any] = {"location": {"x": x, "y": y, "z": z}, "instance_id": 0}
        if translations is not None:
            tx, ty, tz = translations[i]
            point["transformation_"] = [
                [1.0, 0.0, 0.0, tx],
                [0.0, 1.0, 0.0, ty],
                [0.0, 0.0, 1.0, tz],
                [0.0, 0.0, 0.0, 1.0],
            ]
        points.append(point)
    doc: dict[str, Any] = {
        "pickable_object_name": name,
        "user_id": "curation",
        "session_id": "0",
        "run_name": "TS_1",
        "points": points,
    }
    if unit is not None:
        doc["unit"] = unit
    path.write_text(json.dumps(doc))
    return path


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# --- copick picks -------------------------------------------------------------------------------


class TestCopickPicks:
    @pytest.mark.parametrize(
        ("points", "got"), [(None, "null"), ("many", "str"), (..., "no 'points' key")]
    )
    def test_points_not_a_list_are_refused(self, tmp_path: Path, points: Any, got: str) -> None:
        doc = {"pickable_object_name": "ribosome", "unit": "angstrom", "points": points}
        if points is ...:
            del doc["points"]
        f = tmp_path / "p.json"
        f.write_text(json.dumps(doc))
        with pytest.raises(BadLabels, match=rf"p\.json: expected 'points' to be a list.*{got}"):
            read_copick_picks(f, 10.0)

    def test_angstrom_to_voxels_isotropic(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(100.0, 200.0, 300.0), (0.0, 5.0, 15.0)])
        pts = read_copick_picks(f, (10.0, 10.0, 10.0))
        np.testing.assert_array_equal(pts.zyx, [[30.0, 20.0, 10.0], [1.5, 0.5, 0.0]])
        assert pts.zyx.dtype == np.float64 and pts.labels.dtype == np.int64
        np.testing.assert_array_equal(pts.labels, [0, 0])
        assert pts.class_names == ("ribosome",)
        assert pts.source == str(f)

    def test_translation_is_added_before_scaling(self, tmp_path: Path) -> None:
        f = write_picks(
            tmp_path / "p.json", [(100.0, 200.0, 300.0)], translations=[(10.0, 20.0, -30.0)]
        )
        pts = read_copick_picks(f, (10.0, 10.0, 10.0))
        np.testing.assert_array_equal(pts.zyx, [[27.0, 22.0, 11.0]])

    def test_anisotropic_voxel_size_is_zyx(self, tmp_path: Path) -> None:
        f = write_picks(
            tmp_path / "p.json", [(100.0, 200.0, 300.0)], translations=[(0.0, 0.0, 100.0)]
        )
        pts = read_copick_picks(f, (20.0, 10.0, 5.0))
        np.testing.assert_array_equal(pts.zyx, [[20.0, 20.0, 20.0]])

    def test_scalar_voxel_size(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)])
        np.testing.assert_array_equal(read_copick_picks(f, 10.0).zyx, [[3.0, 2.0, 1.0]])

    @pytest.mark.parametrize("unit", ["nanometer", "nm", "Nanometer"])
    def test_nanometer_unit(self, tmp_path: Path, unit: str) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)], unit=unit)
        np.testing.assert_array_equal(read_copick_picks(f, (10, 10, 10)).zyx, [[30.0, 20.0, 10.0]])

    def test_missing_unit_means_angstrom(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)], unit=None)
        np.testing.assert_array_equal(read_copick_picks(f, (10, 10, 10)).zyx, [[3.0, 2.0, 1.0]])

    def test_unknown_unit(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)], unit="pixel")
        with pytest.raises(BadLabels, match=r"p\.json.*'pixel'"):
            read_copick_picks(f, (10, 10, 10))

    @pytest.mark.parametrize(
        "bad",
        [
            {"location": {"x": 1.0, "y": 2.0}},
            {"location": {"x": 1.0, "y": "two", "z": 3.0}},
            {"location": {"x": 1.0, "y": True, "z": 3.0}},
            {"location": {"x": 1.0, "y": 2.0, "z": 3.0}, "transformation_": [[1, 0, 0], [0, 1, 0]]},
            {"location": {"x": 1.0, "y": 2.0, "z": 3.0}, "transformation_": "identity"},
            {"position": [1, 2, 3]},
            [1, 2, 3],
        ],
    )
    def test_malformed_point_names_file_and_index(self, tmp_path: Path, bad: Any) -> None:
        f = write_picks(tmp_path / "picks.json", [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)])
        doc = json.loads(f.read_text())
        doc["points"].insert(2, bad)
        f.write_text(json.dumps(doc))
        with pytest.raises(BadLabels, match=r"picks\.json: point 2 is malformed"):
            read_copick_picks(f, (10, 10, 10))

    def test_missing_transformation_is_identity(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)])
        doc = json.loads(f.read_text())
        doc["points"][0]["transformation_"] = None
        f.write_text(json.dumps(doc))
        np.testing.assert_array_equal(read_copick_picks(f, 10).zyx, [[3.0, 2.0, 1.0]])

    def test_class_id_from_class_names(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)] * 2, name="ribosome")
        pts = read_copick_picks(f, 10, class_names=("apo-ferritin", "beta-amylase", "ribosome"))
        np.testing.assert_array_equal(pts.labels, [2, 2])
        assert pts.class_names == ("apo-ferritin", "beta-amylase", "ribosome")

    def test_unknown_object_lists_known(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [], name="virus")
        with pytest.raises(BadLabels, match=r"'virus'.*\['apo-ferritin', 'ribosome'\]"):
            read_copick_picks(f, 10, class_names=("apo-ferritin", "ribosome"))

    def test_no_voxel_size(self, tmp_path: Path) -> None:
        f = write_picks(tmp_path / "p.json", [(10.0, 20.0, 30.0)])
        with pytest.raises(BadLabels, match=r"Angstrom.*voxel size"):
            read_copick_picks(f, None)

    def test_empty_points(self, tmp_path: Path) -> None:
        f = tmp_path / "p.json"
        f.write_text(json.dumps({"pickable_object_name": "ribosome", "points": []}))
        pts = read_copick_picks(f, 10)
        assert len(pts) == 0 and pts.zyx.shape == (0, 3) and pts.labels.shape == (0,)

    @pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"points": []}'])
    def test_malformed_file(self, tmp_path: Path, text: str) -> None:
        f = tmp_path / "p.json"
        f.write_text(text)
        with pytest.raises(BadLabels, match=r"p\.json"):
            read_copick_picks(f, 10)

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        xyz=st.lists(st.tuples(*[st.floats(0, 1e4, allow_nan=False)] * 3), min_size=0, max_size=10),
        voxel=st.tuples(*[st.floats(0.5, 50.0)] * 3),
        nm=st.booleans(),
    )
    def test_voxels_times_voxel_size_give_back_locations(
        self, tmp_path: Path, xyz: list[tuple[float, float, float]], voxel: Any, nm: bool
    ) -> None:
        f = write_picks(tmp_path / "h.json", xyz, unit="nm" if nm else "angstrom")
        pts = read_copick_picks(f, voxel)
        expected = np.array([(z, y, x) for x, y, z in xyz]).reshape(-1, 3) * (10 if nm else 1)
        np.testing.assert_allclose(pts.zyx * np.array(voxel), expected, rtol=1e-12, atol=1e-9)


# --- Points -------------------------------------------------------------------------------------


class TestPoints:
    def test_concat_remaps_onto_shared_names(self) -> None:
        a = Points(np.ones((2, 3)), np.array([0, 0]), ("ribosome",), "a.json")
        b = Points(np.zeros((1, 3)), np.array([0]), ("apo-ferritin",), "b.json")
        joined = Points.concat([a, b])
        assert joined.class_names == ("apo-ferritin", "ribosome")
        np.testing.assert_array_equal(joined.labels, [1, 1, 0])
        assert joined.zyx.shape == (3, 3)
        assert joined.source == "a.json, b.json"

    def test_concat_with_given_names(self) -> None:
        a = Points(np.ones((1, 3)), np.array([1]), ("x", "y"), "a.csv")
        joined = Points.concat([a], ("y", "z", "x"))
        np.testing.assert_array_equal(joined.labels, [0])

    def test_concat_unknown_name(self) -> None:
        a = Points(np.ones((1, 3)), np.array([0]), ("virus",), "a.json")
        with pytest.raises(BadLabels, match=r"a\.json.*'virus'"):
            Points.concat([a], ("ribosome",))

    def test_concat_nothing(self) -> None:
        joined = Points.concat([], ("a",))
        assert len(joined) == 0 and joined.class_names == ("a",)

    def test_labels_must_index_class_names(self) -> None:
        with pytest.raises(ValueError, match="class_names"):
            Points(np.zeros((1, 3)), np.array([1]), ("only",), "x")

    def test_check_inside_accepts_the_extent(self) -> None:
        zyx = np.array([[0.0, 0.0, 0.0], [-0.5, -0.5, -0.5], [3.99, 4.99, 5.99]])
        Points(zyx, np.zeros(3, np.int64), ("a",), "p.json").check_inside((4, 5, 6), "v.zarr")

    @pytest.mark.parametrize(
        "bad", [[4.0, 0.0, 0.0], [0.0, -0.6, 0.0], [0.0, 0.0, 6.0], [np.nan, 0.0, 0.0]]
    )
    def test_check_inside_names_file_point_and_shape(self, bad: list[float]) -> None:
        zyx = np.array([[1.0, 1.0, 1.0], bad, bad])
        pts = Points(zyx, np.zeros(3, np.int64), ("a",), "picks.json")
        with pytest.raises(PointsOutsideVolume) as info:
            pts.check_inside((4, 5, 6), "tomo.zarr")
        msg = str(info.value)
        assert "picks.json" in msg and "point 1" in msg and "tomo.zarr" in msg
        assert "(4, 5, 6)" in msg and "2 of 3" in msg


# --- copick config ------------------------------------------------------------------------------


def test_copick_config_sorted_by_name(tmp_path: Path) -> None:
    f = tmp_path / "copick_config.json"
    objects = [
        {"name": "virus-like-particle", "is_particle": True, "label": 1, "radius": 135.0},
        {"name": "apo-ferritin", "is_particle": True, "label": 2, "radius": 60},
        {"name": "membrane", "is_particle": False, "label": 3},
        {"name": "beta-amylase", "label": 4, "radius": 65.0},
    ]
    f.write_text(json.dumps({"name": "test", "pickable_objects": objects}))
    radii = read_copick_config(f)
    assert list(radii) == ["apo-ferritin", "beta-amylase", "virus-like-particle"]
    assert radii == {"apo-ferritin": 60.0, "beta-amylase": 65.0, "virus-like-particle": 135.0}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"name": "x"}, "pickable_objects"),
        ({"pickable_objects": [{"radius": 6.0}]}, "object 0 has no 'name'"),
        ({"pickable_objects": [{"name": "a", "radius": "big"}]}, "'a' has radius 'big'"),
        ({"pickable_objects": [{"name": "a"}]}, "'a' has radius None"),
        ({"pickable_objects": [{"name": "a", "radius": 1}, {"name": "a", "radius": 2}]}, "twice"),
    ],
)
def test_copick_config_malformed(tmp_path: Path, doc: Any, match: str) -> None:
    f = tmp_path / "copick_config.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(BadLabels, match=match):
        read_copick_config(f)


# --- class CSV ----------------------------------------------------------------------------------


class TestClassCsv:
    def test_ids_follow_sorted_names(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["s1", "dog"], ["s2", "cat"]])
        table = read_class_csv(f)
        assert isinstance(table, ClassTable)
        assert table.class_names == ("cat", "dog")
        assert table.classes == {"s1": 1, "s2": 0}
        assert table.name_of("s1") == "dog"
        assert table.path == f

    @pytest.mark.parametrize(
        "header",
        [
            ["Sample_ID", " Label "],
            ["id", "class_name"],
            ["name", "class"],
            ["extra", "id", "label"],
        ],
    )
    def test_column_names(self, tmp_path: Path, header: list[str]) -> None:
        pad = [""] * (len(header) - 2)
        rows = [header, [*pad, "a", "x"], [*pad, "b", "y"]]
        table = read_class_csv(write_csv(tmp_path / "c.csv", rows))
        assert table.classes == {"a": 0, "b": 1}

    def test_first_listed_id_column_wins(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["id", "sample", "class"], ["1", "a", "x"]])
        assert read_class_csv(f).classes == {"a": 0}

    def test_byte_order_mark_and_blank_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "c.csv"
        f.write_text("\ufeffsample,class\n\na,x\n", encoding="utf-8")
        assert read_class_csv(f).classes == {"a": 0}

    def test_checked_against_samples(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["a", "x"], ["b", "y"]])
        assert read_class_csv(f, samples=["b", "a"]).classes == {"a": 0, "b": 1}

    def test_unknown_samples_listed_with_count(self, tmp_path: Path) -> None:
        rows = [["sample", "class"], ["a", "x"]] + [[f"ghost{i}", "x"] for i in range(8)]
        f = write_csv(tmp_path / "c.csv", rows)
        with pytest.raises(BadLabels) as info:
            read_class_csv(f, samples=["a"])
        msg = str(info.value)
        assert "c.csv" in msg and "do not exist" in msg
        assert "'ghost0'" in msg and "and 3 more (8 in all)" in msg
        assert "ghost7" not in msg

    def test_samples_without_row(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["a", "x"]])
        with pytest.raises(BadLabels, match=r"c\.csv: samples without a row: 'b', 'c'"):
            read_class_csv(f, samples=["a", "b", "c"])

    def test_both_problems_in_one_message(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["a", "x"], ["z", "x"]])
        with pytest.raises(BadLabels, match="do not exist: 'z'; samples without a row: 'b'"):
            read_class_csv(f, samples=["a", "b"])

    def test_duplicate_ids(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["a", "x"], ["a", "y"]])
        with pytest.raises(BadLabels, match=r"duplicate sample ids 'a \(rows 2 and 3\)'"):
            read_class_csv(f)

    @pytest.mark.parametrize(
        ("header", "match"),
        [
            (["sample", "kind"], "a class column .one of class, label, class_name"),
            (["who", "class"], "an id column .one of sample, sample_id, id, name"),
        ],
    )
    def test_missing_columns(self, tmp_path: Path, header: list[str], match: str) -> None:
        f = write_csv(tmp_path / "c.csv", [header, ["a", "x"]])
        with pytest.raises(BadLabels, match=match):
            read_class_csv(f)

    def test_empty_file(self, tmp_path: Path) -> None:
        f = tmp_path / "c.csv"
        f.write_text("")
        with pytest.raises(BadLabels, match=r"c\.csv: empty file; expected a CSV with a header"):
            read_class_csv(f)

    def test_header_only(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"]])
        with pytest.raises(BadLabels, match="header only"):
            read_class_csv(f)

    def test_empty_class_cell(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "c.csv", [["sample", "class"], ["a", ""]])
        with pytest.raises(BadLabels, match="row 2 has an empty class"):
            read_class_csv(f)

    @settings(
        max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        mapping=st.dictionaries(
            st.text("abcdef0123_", min_size=1, max_size=6),
            st.sampled_from(["cat", "dog", "eel", "ant"]),
            min_size=1,
            max_size=12,
        )
    )
    def test_ids_do_not_depend_on_row_order(self, tmp_path: Path, mapping: dict[str, str]) -> None:
        rows = [[s, c] for s, c in mapping.items()]
        a = read_class_csv(write_csv(tmp_path / "a.csv", [["sample", "class"], *rows]))
        b = read_class_csv(write_csv(tmp_path / "b.csv", [["sample", "class"], *rows[::-1]]))
        assert a.classes == b.classes and a.class_names == b.class_names
        assert {s: a.name_of(s) for s in mapping} == mapping


# --- spot tables --------------------------------------------------------------------------------


class TestSpotTable:
    def test_integer_labels_are_ids(self, tmp_path: Path) -> None:
        rows = [["z", "y", "x", "label"], [1, 2, 3, 3], [4.5, 5, 6, 1]]
        pts = read_spot_table(write_csv(tmp_path / "s.csv", rows))
        np.testing.assert_array_equal(pts.zyx, [[1, 2, 3], [4.5, 5, 6]])
        np.testing.assert_array_equal(pts.labels, [3, 1])
        assert pts.class_names == ("0", "1", "2", "3")

    def test_text_labels_in_sorted_order(self, tmp_path: Path) -> None:
        rows = [["x", "y", "z", "class"], [1, 2, 3, "nucleus"], [4, 5, 6, "cell"]]
        pts = read_spot_table(write_csv(tmp_path / "s.csv", rows))
        np.testing.assert_array_equal(pts.zyx, [[3, 2, 1], [6, 5, 4]])  # columns by name
        np.testing.assert_array_equal(pts.labels, [1, 0])
        assert pts.class_names == ("cell", "nucleus")

    def test_no_label_column(self, tmp_path: Path) -> None:
        pts = read_spot_table(write_csv(tmp_path / "s.csv", [["Z", "Y", "X"], [1, 2, 3]]))
        np.testing.assert_array_equal(pts.labels, [0])
        assert pts.class_names == ("spot",)

    def test_header_only_is_empty(self, tmp_path: Path) -> None:
        pts = read_spot_table(write_csv(tmp_path / "s.csv", [["z", "y", "x"]]))
        assert len(pts) == 0 and pts.zyx.shape == (0, 3)

    @pytest.mark.parametrize("value", ["abc", "", "nan", "inf"])
    def test_bad_coordinate_names_row_and_value(self, tmp_path: Path, value: str) -> None:
        rows = [["z", "y", "x"], [1, 2, 3], [1, value, 3]]
        f = write_csv(tmp_path / "s.csv", rows)
        with pytest.raises(BadLabels, match=rf"s\.csv: row 3: y = '{value}'"):
            read_spot_table(f)

    def test_missing_column(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "s.csv", [["z", "y", "label"], [1, 2, 3]])
        with pytest.raises(BadLabels, match=r"s\.csv: expected columns z, y, x.*missing x"):
            read_spot_table(f)

    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            (["1", "1.5"], r"row 3: label = '1\.5'; expected a class id"),
            (["0", "-1"], r"row 3: label = '-1'; expected a class id"),
            (["cat", "2e0"], r"row 3: label = '2e0'; expected a class id"),
            (["0", "1", "cat"], r"row 4: label = 'cat' among class ids \(row 2: '0'\)"),
        ],
    )
    def test_labels_neither_ids_nor_names_are_refused_by_row(
        self, tmp_path: Path, labels: list[str], match: str
    ) -> None:
        rows = [["z", "y", "x", "label"], *[[1, 2, 3, label] for label in labels]]
        with pytest.raises(BadLabels, match=rf"s\.csv: {match}"):
            read_spot_table(write_csv(tmp_path / "s.csv", rows))

    def test_empty_label(self, tmp_path: Path) -> None:
        f = write_csv(tmp_path / "s.csv", [["z", "y", "x", "label"], [1, 2, 3, ""]])
        with pytest.raises(BadLabels, match="row 2: empty label"):
            read_spot_table(f)

    @settings(
        max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        zyx=st.lists(
            st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False)] * 3), min_size=0, max_size=20
        )
    )
    def test_coordinates_round_trip(self, tmp_path: Path, zyx: list[tuple[float, ...]]) -> None:
        f = write_csv(tmp_path / "s.csv", [["z", "y", "x"], *[[repr(v) for v in p] for p in zyx]])
        pts = read_spot_table(f)
        np.testing.assert_array_equal(pts.zyx, np.array(zyx, dtype=np.float64).reshape(-1, 3))
