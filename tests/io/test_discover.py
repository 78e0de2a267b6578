"""Discovery of copick projects, sample folders and volumes; points loaded against volumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from streamvol.errors import BadLabels, NoVolumeFound, PicksLeftOut, PointsOutsideVolume
from streamvol.io import (
    Dataset,
    SourceSpec,
    copick_config,
    copick_picks,
    discover,
    open_volume,
)
from streamvol.io._discover import load_points

SHAPE = (4, 8, 8)


def write_ome_zarr(path: Path, shape: tuple[int, ...] = SHAPE, scale: float = 10.0) -> Path:
    """A minimal OME-NGFF 0.4 group (zarr v2) with one level, as copick stores tomograms."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    transform = [{"type": "scale", "scale": [scale] * 3}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": transform}],
        }
    ]
    array = group.create_array("0", shape=shape, dtype="float32", chunks=shape)
    array[:] = np.zeros(shape, dtype="float32")
    return path


def write_picks(
    path: Path,
    name: str,
    xyz: list[tuple[float, float, float]],
    user: str = "curation",
    session: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    points = [{"location": {"x": x, "y": y, "z": z}, "instance_id": 0} for x, y, z in xyz]
    doc = {"pickable_object_name": name, "user_id": user, "unit": "angstrom", "points": points}
    if session is not None:
        doc["session_id"] = session
    path.write_text(json.dumps(doc))
    return path


def write_config(root: Path, radii: dict[str, float]) -> None:
    objects = [
        {"name": n, "is_particle": True, "label": i + 1, "radius": r}
        for i, (n, r) in enumerate(radii.items())
    ]
    (root / "copick_config.json").write_text(json.dumps({"name": "t", "pickable_objects": objects}))


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def write_slices(folder: Path, depth: int = SHAPE[0], dtype: str = "uint8") -> Path:
    folder.mkdir(parents=True)
    for z in range(depth):
        tifffile.imwrite(folder / f"slice_{z}.tif", np.full(SHAPE[1:], z, dtype=dtype))
    return folder


def write_stack(path: Path, dtype: str = "uint8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros(SHAPE, dtype=dtype), photometric="minisblack")
    return path


# --- copick -------------------------------------------------------------------------------------


def copick_nested(root: Path) -> Path:
    """Runs TS_10 and TS_2, two tomograms each, picks of two particles in the overlay."""
    write_config(root, {"ribosome": 150.0, "apo-ferritin": 60.0})
    for run in ("TS_10", "TS_2"):
        spacing = root / "static" / "ExperimentRuns" / run / "VoxelSpacing10.000"
        write_ome_zarr(spacing / "denoised.zarr")
        write_ome_zarr(spacing / "wbp.zarr")
        picks = root / "overlay" / "ExperimentRuns" / run / "Picks"
        write_picks(picks / "ribosome.json", "ribosome", [(10.0, 20.0, 30.0)])
        write_picks(
            picks / "apo-ferritin.json", "apo-ferritin", [(70.0, 60.0, 0.0), (5.0, 5.0, 5.0)]
        )
    return root


class TestCopick:
    def test_nested_layout(self, tmp_path: Path) -> None:
        root = copick_nested(tmp_path)
        ds = discover(root)
        assert isinstance(ds, Dataset)
        assert ds.layout == "copick" and ds.root == root
        assert [s.id for s in ds.sources] == ["TS_2", "TS_10"]  # natural order
        spec = ds.sources[0]
        assert spec.image == root / "static/ExperimentRuns/TS_2/VoxelSpacing10.000/denoised.zarr"
        assert spec.picks == (
            root / "overlay/ExperimentRuns/TS_2/Picks/apo-ferritin.json",
            root / "overlay/ExperimentRuns/TS_2/Picks/ribosome.json",
        )
        assert spec.mask is None and spec.spots is None and spec.class_name is None
        assert ds.class_names == ("apo-ferritin", "ribosome")
        assert ds.radii == {"apo-ferritin": 60.0, "ribosome": 150.0}

    def test_config_path_and_tomogram_choice(self, tmp_path: Path) -> None:
        root = copick_nested(tmp_path)
        ds = discover(root / "copick_config.json", tomogram="wbp.zarr")
        assert ds.root == root
        assert all(s.image.name == "wbp.zarr" for s in ds.sources)

    def test_flat_layout_without_config(self, tmp_path: Path) -> None:
        run = tmp_path / "ExperimentRuns" / "TS.1"
        write_ome_zarr(run / "VoxelSpacing10" / "isonetcorrected.zarr")
        write_picks(run / "Picks" / "curation_0_ribosome.json", "ribosome", [])
        write_picks(run / "Picks" / "curation_0_thyroglobulin.json", "thyroglobulin", [])
        ds = discover(tmp_path)  # no "denoised": the run's only tomogram is used
        assert ds.layout == "copick"
        assert [s.id for s in ds.sources] == ["TS-1"]  # key-safe: no dots
        assert ds.sources[0].image.name == "isonetcorrected.zarr"
        assert len(ds.sources[0].picks) == 2
        assert ds.class_names == ("ribosome", "thyroglobulin")
        assert ds.radii == {}

    def test_tomogram_not_found_lists_what_exists(self, tmp_path: Path) -> None:
        copick_nested(tmp_path)
        with pytest.raises(NoVolumeFound, match=r"'TS_2'.*'ctf'.*denoised\.zarr, wbp\.zarr"):
            discover(tmp_path, tomogram="ctf")

    def test_voxel_spacing_choice(self, tmp_path: Path) -> None:
        run = tmp_path / "static" / "ExperimentRuns" / "TS_1"
        write_ome_zarr(run / "VoxelSpacing10.000" / "denoised.zarr")
        write_ome_zarr(run / "VoxelSpacing20.000" / "denoised.zarr", scale=20.0)
        with pytest.raises(
            NoVolumeFound, match=r"several voxel spacings \(10, 20\).*voxel_spacing"
        ):
            discover(tmp_path)
        ds = discover(tmp_path, voxel_spacing=20)
        assert ds.sources[0].image.parent.name == "VoxelSpacing20.000"
        assert discover(tmp_path, voxel_spacing=10.0).sources[0].image.parent.name == (
            "VoxelSpacing10.000"
        )
        with pytest.raises(NoVolumeFound, match=r"no voxel spacing 7.5.*available: 10, 20"):
            discover(tmp_path, voxel_spacing=7.5)

    def test_picks_of_one_type_from_two_owners_are_refused_until_chosen(
        self, tmp_path: Path
    ) -> None:
        """A model's predictions written into the project beside the curated picks: joining
        them would train on the predictions, so reading the picks is refused, naming both
        owners, their counts and files, until the owners are chosen; choosing several joins."""
        root = copick_nested(tmp_path)
        picks = root / "overlay/ExperimentRuns/TS_2/Picks"
        predicted = write_picks(
            picks / "streamvol_0_ribosome.json",
            "ribosome",
            [(40.0, 40.0, 20.0), (50.0, 10.0, 30.0)],
            user="streamvol",
            session="0",
        )
        ds = discover(root)  # finding the volumes reads no picks (predict needs only those)
        spec = ds.sources[0]
        volume = open_volume(spec.image)
        with pytest.raises(BadLabels) as err:
            load_points(spec, volume, ds)
        message = str(err.value)
        assert "copick run 'TS_2': picks of 'ribosome' from 2 owners" in message
        assert f"curation/?: 1 pick ({picks / 'ribosome.json'})" in message
        assert f"streamvol/0: 2 picks ({predicted})" in message
        assert "shard --user-id" in message
        load_points(ds.sources[1], volume, ds)  # TS_10 holds one owner's picks only
        # another owner's empty file (a picker that found no ribosome) joins nothing
        ts10 = root / "overlay/ExperimentRuns/TS_10/Picks"
        write_picks(ts10 / "other_9_ribosome.json", "ribosome", [], user="other", session="9")
        load_points(discover(root).sources[1], volume, ds)

        def ribosomes(dataset: Dataset) -> np.ndarray:
            pts = load_points(dataset.sources[0], volume, dataset)
            return pts.zyx[pts.labels == dataset.class_names.index("ribosome")]

        curated = discover(root, user_id=["curation"])
        assert curated.sources[0].picks == (picks / "apo-ferritin.json", picks / "ribosome.json")
        np.testing.assert_array_equal(ribosomes(curated), [[3.0, 2.0, 1.0]])
        both = discover(root, user_id=["curation", "streamvol"])
        np.testing.assert_array_equal(
            ribosomes(both), [[3.0, 2.0, 1.0], [2.0, 4.0, 4.0], [3.0, 1.0, 5.0]]
        )
        with pytest.warns(PicksLeftOut, match=r"run TS_10 has no pick file of session_id 0 "):
            by_session = discover(root, session_id=["0"])
        assert by_session.sources[0].picks == (predicted,)
        assert by_session.sources[1].picks == ()

    def test_one_users_sessions_are_chosen_by_session(self, tmp_path: Path) -> None:
        """The data portal's layout: one user, an annotation per session; the refusal says to
        choose by session_id (a user_id would not tell them apart)."""
        root = copick_nested(tmp_path)
        picks = root / "overlay/ExperimentRuns/TS_2/Picks"
        for f in picks.iterdir():
            f.unlink()
        for session, xyz in (("101", (10.0, 20.0, 30.0)), ("102", (20.0, 20.0, 30.0))):
            name = f"data-portal_{session}_ribosome.json"
            write_picks(picks / name, "ribosome", [xyz], user="data-portal", session=session)
        ds = discover(root)
        volume = open_volume(ds.sources[0].image)
        with pytest.raises(
            BadLabels, match=r"data-portal/101: 1 pick .* choose whose by session_id, e.g. '101' "
            r"\(shard --session-id, score --session, --ref-session\)"
        ):  # fmt: skip
            load_points(ds.sources[0], volume, ds)
        with pytest.raises(BadLabels, match=r"choose whose by session_id"):
            copick_picks(root)
        with pytest.warns(PicksLeftOut, match=r"run TS_10 has no pick file of session_id 102"):
            chosen = discover(root, session_id=["102"])
        np.testing.assert_array_equal(
            load_points(chosen.sources[0], volume, chosen).zyx, [[3, 2, 2]]
        )
        assert copick_picks(root, session="101")["TS_2"]["ribosome"].tolist() == [[30, 20, 10]]

    def test_owners_that_match_no_pick_file_are_refused(self, tmp_path: Path) -> None:
        root = copick_nested(tmp_path)
        with pytest.raises(
            BadLabels, match=r"no pick file of user_id bob and session_id 1; its pick files "
            r"\(user_id/session_id\): curation/\? \(4 files\)"
        ):  # fmt: skip
            discover(root, user_id=["bob"], session_id=["1"])
        write_stack(tmp_path / "stack.tif")
        with pytest.raises(BadLabels, match=r"stack.tif: user_id choose among a copick project"):
            discover(tmp_path / "stack.tif", user_id=["curation"])

    def test_copick_picks_refuses_two_owners_unless_one_is_chosen(self, tmp_path: Path) -> None:
        root = copick_nested(tmp_path)
        picks = root / "overlay/ExperimentRuns/TS_10/Picks"
        write_picks(picks / "a.json", "ribosome", [(1.0, 2.0, 3.0)], user="annotator2")
        write_picks(picks / "b.json", "thyroglobulin", [(1.0, 2.0, 3.0)], user="annotator2")
        with pytest.raises(BadLabels, match=r"'TS_10': picks of 'ribosome' from 2 owners"):
            copick_picks(root)
        curated = copick_picks(root, user="curation")
        np.testing.assert_array_equal(curated["TS_10"]["ribosome"], [[30.0, 20.0, 10.0]])
        assert set(curated["TS_10"]) == {"ribosome", "apo-ferritin"}
        other = copick_picks(root, user="annotator2")
        assert set(other) == {"TS_10"} and set(other["TS_10"]) == {"ribosome", "thyroglobulin"}
        (picks / "a.json").unlink()  # types that one owner each made are joined as before
        assert set(copick_picks(root)["TS_10"]) == {"ribosome", "apo-ferritin", "thyroglobulin"}

    def test_config_of_any_name_names_where_the_runs_are(self, tmp_path: Path) -> None:
        """As copick's own configs: tomograms on a shared disk (``static_root``), picks in the
        user's folder (``overlay_root``), both ``local://`` URLs or paths relative to the
        config; the config may have any name."""
        share, home = tmp_path / "share", tmp_path / "home"
        write_ome_zarr(share / "ExperimentRuns/TS_1/VoxelSpacing10.000/denoised.zarr")
        picks = home / "annotations/ExperimentRuns/TS_1/Picks"
        write_picks(picks / "curation_0_ribosome.json", "ribosome", [(10.0, 20.0, 30.0)])
        config = home / "bob.json"
        write_config(home, {"ribosome": 150.0})
        doc = json.loads((home / "copick_config.json").read_text())
        (home / "copick_config.json").unlink()
        doc.update(static_root=f"local://{share}", overlay_root="annotations")
        doc["config_type"] = "filesystem"
        config.write_text(json.dumps(doc))
        ds = discover(config)
        assert ds.layout == "copick" and ds.root == home
        assert ds.sources[0].image == share / "ExperimentRuns/TS_1/VoxelSpacing10.000/denoised.zarr"
        assert ds.sources[0].picks == (picks / "curation_0_ribosome.json",)
        assert ds.radii == {"ribosome": 150.0}
        assert copick_picks(config)["TS_1"]["ribosome"].tolist() == [[30.0, 20.0, 10.0]]
        assert copick_config(config) == config and copick_config(share) is None
        assert copick_config(picks / "curation_0_ribosome.json") is None  # not a config
        doc["overlay_root"] = "not-yet"  # copick makes the overlay on its first write
        config.write_text(json.dumps(doc))
        assert discover(config).sources[0].picks == ()

    def test_the_layout_beside_a_config_counts_too(self, tmp_path: Path) -> None:
        """A config naming only its overlay (as ``predict`` wrote them into a project before
        it kept the project's own): the tomograms in ``static/`` beside it are still found."""
        root = copick_nested(tmp_path)
        doc = json.loads((root / "copick_config.json").read_text())
        (root / "copick_config.json").write_text(json.dumps({**doc, "overlay_root": "overlay"}))
        ds = discover(root)
        assert [s.image for s in ds.sources] == [
            root / f"static/ExperimentRuns/{run}/VoxelSpacing10.000/denoised.zarr"
            for run in ("TS_2", "TS_10")
        ]
        assert all(len(s.picks) == 2 for s in ds.sources)

    def test_config_roots_that_cannot_be_read_are_refused(self, tmp_path: Path) -> None:
        config = tmp_path / "c.json"
        doc = {"name": "p", "pickable_objects": [], "overlay_root": "s3://bucket/overlay"}
        for update, message in (
            ({}, r"overlay_root 's3://bucket/overlay': streamvol reads local copick projects"),
            ({"overlay_root": "local:///nowhere"}, r"overlay_root 'local:///nowhere' is not a"),
            (
                {"overlay_root": "local:///tmp", "config_type": "cryoet_data_portal"},
                r"config_type 'cryoet_data_portal' reads its tomograms from the CZ cryoET",
            ),
        ):
            config.write_text(json.dumps({**doc, **update}))
            with pytest.raises(NoVolumeFound, match=message):
                discover(config)

    def test_run_without_tomogram(self, tmp_path: Path) -> None:
        write_picks(tmp_path / "overlay/ExperimentRuns/TS_9/Picks/a.json", "a", [])
        with pytest.raises(NoVolumeFound, match=r"'TS_9': no VoxelSpacing<s> folder"):
            discover(tmp_path)

    def test_config_without_runs(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"a": 1.0})
        with pytest.raises(NoVolumeFound, match=r"without runs.*1 files seen"):
            discover(tmp_path)

    def test_class_csv_refused(self, tmp_path: Path) -> None:
        copick_nested(tmp_path)
        with pytest.raises(BadLabels, match="does not apply to the copick project"):
            discover(tmp_path, classes=tmp_path / "c.csv")

    def test_load_points_joins_pick_files(self, tmp_path: Path) -> None:
        ds = discover(copick_nested(tmp_path))
        spec = ds.sources[0]
        volume = open_volume(spec.image)
        assert volume.voxel_size == (10.0, 10.0, 10.0)
        pts = load_points(spec, volume, ds)
        assert pts is not None
        assert pts.class_names == ("apo-ferritin", "ribosome")
        np.testing.assert_allclose(pts.zyx, [[0.0, 6.0, 7.0], [0.5, 0.5, 0.5], [3.0, 2.0, 1.0]])
        np.testing.assert_array_equal(pts.labels, [0, 0, 1])

    def test_load_points_outside_volume(self, tmp_path: Path) -> None:
        ds = discover(copick_nested(tmp_path))
        spec = ds.sources[1]
        write_picks(spec.picks[1], "ribosome", [(10.0, 20.0, 30.0), (10.0, 20.0, 400.0)])
        with pytest.raises(PointsOutsideVolume) as info:
            load_points(spec, open_volume(spec.image), ds)
        msg = str(info.value)
        assert "ribosome.json" in msg and "point 1" in msg and "(40.00, 2.00, 1.00)" in msg
        assert "denoised.zarr" in msg and str(SHAPE) in msg

    def test_load_points_unknown_particle(self, tmp_path: Path) -> None:
        ds = discover(copick_nested(tmp_path))
        spec = ds.sources[0]
        write_picks(spec.picks[0], "virus", [])
        with pytest.raises(BadLabels, match=r"'virus'.*\['apo-ferritin', 'ribosome'\]"):
            load_points(spec, open_volume(spec.image), ds)


# --- sample folders -----------------------------------------------------------------------------


class TestSamples:
    def test_raw_and_mask_folders_with_classes(self, tmp_path: Path) -> None:
        write_slices(tmp_path / "sample10" / "raw")
        write_slices(tmp_path / "sample10" / "mask")
        write_stack(tmp_path / "sample2" / "raw" / "stack.tif")
        write_stack(tmp_path / "sample2" / "mask" / "labels.tif")
        write_csv(
            tmp_path / "classes.csv", [["sample", "class"], ["sample2", "b"], ["sample10", "a"]]
        )
        ds = discover(tmp_path)
        assert ds.layout == "samples"
        assert [s.id for s in ds.sources] == ["sample2", "sample10"]
        s2, s10 = ds.sources
        assert s2.image == tmp_path / "sample2/raw/stack.tif"
        assert s2.mask == tmp_path / "sample2/mask/labels.tif"
        assert s10.image == tmp_path / "sample10/raw" and s10.mask == tmp_path / "sample10/mask"
        assert (s2.class_name, s10.class_name) == ("b", "a")
        assert ds.class_names == ("a", "b") and ds.radii == {}
        assert open_volume(s10.image).shape == SHAPE  # what discovery names, open_volume opens

    def test_without_masks_or_classes(self, tmp_path: Path) -> None:
        write_slices(tmp_path / "a" / "raw")
        write_slices(tmp_path / "b" / "raw")
        (tmp_path / "notes").mkdir()  # not a sample: no raw/
        ds = discover(tmp_path)
        assert [(s.id, s.mask, s.class_name) for s in ds.sources] == [
            ("a", None, None),
            ("b", None, None),
        ]
        assert ds.class_names == ()

    def test_classes_given_elsewhere_are_checked_both_ways(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        write_slices(data / "a" / "raw")
        write_slices(data / "b" / "raw")
        labels = write_csv(tmp_path / "labels.csv", [["id", "label"], ["a", "x"], ["c", "y"]])
        with pytest.raises(BadLabels, match=r"labels\.csv.*do not exist: 'c'.*without a row: 'b'"):
            discover(data, classes=labels)

    def test_one_sample_folder(self, tmp_path: Path) -> None:
        write_slices(tmp_path / "s1" / "raw")
        ds = discover(tmp_path / "s1")
        assert ds.layout == "samples" and [s.id for s in ds.sources] == ["s1"]

    def test_raw_with_two_stacks_is_ambiguous(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "s" / "raw" / "a.tif")
        write_stack(tmp_path / "s" / "raw" / "b.tif")
        with pytest.raises(
            NoVolumeFound, match=r"raw: expected one volume.*found 2: a\.tif, b\.tif"
        ):
            discover(tmp_path)


# --- volumes ------------------------------------------------------------------------------------


class TestVolumes:
    def test_single_volume_file(self, tmp_path: Path) -> None:
        np.save(tmp_path / "cell.npy", np.zeros(SHAPE, dtype="float32"))
        np.save(tmp_path / "cell_mask.npy", np.zeros(SHAPE, dtype="uint8"))
        write_csv(tmp_path / "cell.csv", [["z", "y", "x"], [1, 2, 3]])
        ds = discover(tmp_path / "cell.npy")
        assert ds.layout == "volumes"
        assert ds.sources == (
            SourceSpec(
                id="cell",
                image=tmp_path / "cell.npy",
                mask=tmp_path / "cell_mask.npy",
                spots=tmp_path / "cell.csv",
            ),
        )
        assert ds.class_names == ("spot",)

    def test_single_zarr_and_slice_folder(self, tmp_path: Path) -> None:
        zarr.create_array(str(tmp_path / "v.zarr"), data=np.zeros(SHAPE, "uint16"))
        write_slices(tmp_path / "v_mask")
        write_csv(tmp_path / "classes.csv", [["sample", "class"], ["other", "x"]])  # not used
        ds = discover(tmp_path / "v.zarr")
        assert ds.sources == (
            SourceSpec(id="v", image=tmp_path / "v.zarr", mask=tmp_path / "v_mask"),
        )
        assert ds.class_names == ()
        write_slices(tmp_path / "slices")
        ds = discover(tmp_path / "slices")
        assert [(s.id, s.image, s.mask) for s in ds.sources] == [
            ("slices", tmp_path / "slices", None)
        ]

    def test_a_mask_given_as_the_path_is_an_image(self, tmp_path: Path) -> None:
        ds = discover(write_stack(tmp_path / "a_mask.tif"))
        assert [(s.id, s.mask) for s in ds.sources] == [("a_mask", None)]

    def test_folder_of_volumes_with_masks_and_spots(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_stack(tmp_path / "a_mask.tif")
        write_csv(tmp_path / "a.csv", [["z", "y", "x", "label"], [1, 1, 1, 2]])
        np.save(tmp_path / "b10.npy", np.zeros(SHAPE, dtype="float32"))
        write_csv(tmp_path / "b10.csv", [["z", "y", "x", "label"], [1, 1, 1, 0]])
        np.save(tmp_path / "b9.npy", np.zeros(SHAPE, dtype="float32"))
        zarr.create_array(str(tmp_path / "c.ome.zarr"), data=np.zeros(SHAPE, "uint8"))
        zarr.create_array(str(tmp_path / "c_mask.zarr"), data=np.zeros(SHAPE, "uint8"))
        write_slices(tmp_path / "d")
        (tmp_path / "notes.txt").write_text("not a volume")
        (tmp_path / ".DS_Store").write_text("")
        ds = discover(tmp_path)
        assert ds.layout == "volumes"
        got = [
            (s.id, s.image.name, s.mask and s.mask.name, s.spots and s.spots.name)
            for s in ds.sources
        ]
        assert got == [
            ("a", "a.tif", "a_mask.tif", "a.csv"),
            ("b9", "b9.npy", None, None),
            ("b10", "b10.npy", None, "b10.csv"),
            ("c", "c.ome.zarr", "c_mask.zarr", None),
            ("d", "d", None, None),
        ]
        assert ds.class_names == ("0", "1", "2")  # shared by every spot table

    def test_classes_csv_beside_volumes(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_stack(tmp_path / "b.tif")
        write_csv(
            tmp_path / "classes.csv", [["name", "class"], ["a", "mitotic"], ["b", "interphase"]]
        )
        ds = discover(tmp_path)
        assert [s.class_name for s in ds.sources] == ["mitotic", "interphase"]
        assert ds.class_names == ("interphase", "mitotic")
        assert all(s.spots is None for s in ds.sources)

    def test_classes_and_labelled_spots_conflict(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_csv(tmp_path / "a.csv", [["z", "y", "x", "label"], [1, 1, 1, "x"]])
        write_csv(tmp_path / "classes.csv", [["name", "class"], ["a", "k"]])
        with pytest.raises(BadLabels, match=r"a\.csv: spot labels beside the per-sample classes"):
            discover(tmp_path)

    def test_mask_without_image(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_stack(tmp_path / "b_mask.tif")
        with pytest.raises(BadLabels, match=r"b_mask\.tif: a mask without its image b\."):
            discover(tmp_path)

    def test_duplicate_ids_name_both_paths(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.b.tif")
        np.save(tmp_path / "a-b.npy", np.zeros(SHAPE, dtype="float32"))
        with pytest.raises(NoVolumeFound) as info:
            discover(tmp_path)
        msg = str(info.value)
        assert "'a-b'" in msg and "a-b.npy" in msg and "a.b.tif" in msg

    def test_load_points_spot_table(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_csv(tmp_path / "a.csv", [["z", "y", "x", "label"], [1, 2, 3, "nucleus"]])
        write_stack(tmp_path / "b.tif")
        write_csv(
            tmp_path / "b.csv", [["z", "y", "x", "label"], [3, 7, 7, "cell"], [0, 0, 0, "nucleus"]]
        )
        ds = discover(tmp_path)
        assert ds.class_names == ("cell", "nucleus")
        a, b = (load_points(s, open_volume(s.image), ds) for s in ds.sources)
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.labels, [1])  # same id as in b, not 0
        np.testing.assert_array_equal(b.labels, [0, 1])
        np.testing.assert_array_equal(a.zyx, [[1, 2, 3]])

    def test_load_points_spots_outside(self, tmp_path: Path) -> None:
        write_stack(tmp_path / "a.tif")
        write_csv(tmp_path / "a.csv", [["z", "y", "x"], [1, 2, 3], [4, 2, 3]])
        ds = discover(tmp_path)
        with pytest.raises(
            PointsOutsideVolume, match=r"a\.csv: point 1 .*a\.tif of shape \(4, 8, 8\)"
        ):
            load_points(ds.sources[0], open_volume(ds.sources[0].image), ds)

    def test_load_points_none_without_labels(self, tmp_path: Path) -> None:
        ds = discover(write_stack(tmp_path / "a.tif"))
        assert load_points(ds.sources[0], open_volume(ds.sources[0].image), ds) is None


# --- nothing found ------------------------------------------------------------------------------


def test_nothing_found_names_path_count_and_layouts(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"img{i}.png").write_bytes(b"\x89PNG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("hi")
    with pytest.raises(NoVolumeFound) as info:
        discover(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert "4 files seen" in msg and ".png: 3" in msg
    for tried in ("copick", "copick_config.json", "sample folders", "raw/", ".tif", ".mrc", "zarr"):
        assert tried in msg


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NoVolumeFound, match="0 files seen"):
        discover(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(NoVolumeFound, match="no such file or folder"):
        discover(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):  # NoVolumeFound is a FileNotFoundError
        discover(tmp_path / "nope")


def test_file_that_is_not_a_volume(tmp_path: Path) -> None:
    (tmp_path / "data.h5").write_bytes(b"")
    with pytest.raises(NoVolumeFound, match=r"data\.h5: not a volume; expected a file ending in"):
        discover(tmp_path / "data.h5")
