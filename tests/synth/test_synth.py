"""Synthetic data sets: determinism, on-disk layouts, ground truth, scaling, safety, read-back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from streamvol import synth
from streamvol.synth import _nuclei, _spots, _tomograms

TOMO_SMALL = (40, 64, 64)
NUC_SMALL = (12, 20, 20)
SPOT_SMALL = (16, 64, 64)


# --- readers used only here (the library's own readers are tested in the last section) --------


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def read_slices(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("z*.tif"))
    return np.stack([tifffile.imread(f) for f in files])


def tomo_path(root: Path, k: int) -> Path:
    return root / "static/ExperimentRuns" / f"TS_{k}" / "VoxelSpacing10.000" / "denoised.zarr"


def picks_path(root: Path, k: int, name: str) -> Path:
    return root / "overlay/ExperimentRuns" / f"TS_{k}" / "Picks" / f"{name}.json"


def read_picks_zyx(path: Path) -> np.ndarray:
    doc = json.loads(path.read_text())
    loc = [p["location"] for p in doc["points"]]
    return np.asarray([[p["z"], p["y"], p["x"]] for p in loc], dtype=float).reshape(-1, 3)


def snapshot(root: Path) -> dict[str, object]:
    """Every file under ``root``, decoded where it holds an array (tiff, zarr chunk) else bytes."""
    out: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        out[rel] = tifffile.imread(path) if path.suffix == ".tif" else path.read_bytes()
    return out


def same(a: dict[str, object], b: dict[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


# --- shared outputs at default sizes ------------------------------------------------------------


@pytest.fixture(scope="module")
def tomo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.make("tomograms", tmp_path_factory.mktemp("t") / "copick", seed=3)


@pytest.fixture(scope="module")
def nuclei_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.make("nuclei", tmp_path_factory.mktemp("n") / "nuclei", seed=3)


@pytest.fixture(scope="module")
def spots_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.make("spots", tmp_path_factory.mktemp("s") / "spots", seed=3)


# --- public surface -----------------------------------------------------------------------------


def test_kinds_and_unknown_kind(tmp_path: Path) -> None:
    assert synth.KINDS == ("tomograms", "nuclei", "spots")
    with pytest.raises(ValueError, match="mrc"):
        synth.make("mrc", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("kind", "size"),
    [("tomograms", (10, 64, 64)), ("nuclei", (2, 20, 20)), ("spots", (4, 48, 48))],
)
def test_too_small_size_is_refused(tmp_path: Path, kind: str, size: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="size"):
        synth.make(kind, tmp_path / "x", size=size)
    with pytest.raises(ValueError, match="size"):
        synth.make(kind, tmp_path / "y", size=(1, 2))
    with pytest.raises(ValueError, match="n"):
        synth.make(kind, tmp_path / "z", n=0)
    assert list(tmp_path.iterdir()) == []


def test_spots_that_cannot_fit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot place"):
        synth.make("spots", tmp_path / "x", size=SPOT_SMALL, n=10_000)
    assert list(tmp_path.iterdir()) == []


# --- determinism --------------------------------------------------------------------------------

SMALL = {
    "tomograms": {"n": 1, "size": TOMO_SMALL},
    "nuclei": {"n": 3, "size": NUC_SMALL},
    "spots": {"n": 30, "size": SPOT_SMALL},
}


@pytest.mark.parametrize("kind", synth.KINDS)
def test_same_seed_same_files_other_seed_differs(tmp_path: Path, kind: str) -> None:
    a = snapshot(synth.make(kind, tmp_path / "a", seed=7, **SMALL[kind]))
    b = snapshot(synth.make(kind, tmp_path / "b", seed=7, **SMALL[kind]))
    c = snapshot(synth.make(kind, tmp_path / "c", seed=8, **SMALL[kind]))
    assert same(a, b)
    assert not same(a, c)


# --- tomograms ----------------------------------------------------------------------------------


def test_copick_config(tomo_root: Path) -> None:
    cfg = json.loads((tomo_root / "copick_config.json").read_text())
    assert cfg["name"] == "streamvol-synth"
    assert cfg["version"] == "0.5.0"
    assert cfg["static_root"] == "static"
    assert cfg["overlay_root"] == "overlay"
    radii = {o["name"]: o["radius"] for o in cfg["pickable_objects"]}
    assert radii == {
        "apo-ferritin": 60,
        "beta-amylase": 65,
        "beta-galactosidase": 90,
        "ribosome": 150,
        "thyroglobulin": 130,
        "virus-like-particle": 135,
    }
    for i, obj in enumerate(cfg["pickable_objects"]):
        assert obj["label"] == i + 1
        assert obj["is_particle"] is True
        assert len(obj["color"]) == 4 and obj["color"][3] == 128


def test_ome_ngff_levels(tomo_root: Path) -> None:
    for k in range(2):
        group = zarr.open_group(str(tomo_path(tomo_root, k)), mode="r")
        assert group.metadata.zarr_format == 2
        (ms,) = group.attrs["multiscales"]
        assert ms["version"] == "0.4"
        assert [(a["name"], a["type"], a["unit"]) for a in ms["axes"]] == [
            (a, "space", "angstrom") for a in "zyx"
        ]
        assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
        scales = [d["coordinateTransformations"] for d in ms["datasets"]]
        assert scales == [[{"type": "scale", "scale": [s] * 3}] for s in (10.0, 20.0, 40.0)]
        levels = [group[str(lvl)][...] for lvl in range(3)]
        assert [lv.shape for lv in levels] == [(64, 128, 128), (32, 64, 64), (16, 32, 32)]
        assert all(lv.dtype == np.float32 for lv in levels)
        assert group["0"].chunks == (32, 32, 32)
        want = levels[0].reshape(32, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5))
        np.testing.assert_allclose(levels[1], want, rtol=1e-5, atol=1e-5)


def test_picks_are_the_drawn_particles(tomo_root: Path) -> None:
    shape = np.asarray(_tomograms.DEFAULT_SIZE)
    for k in range(2):
        truth = synth.render_tomogram(_tomograms.DEFAULT_SIZE, (3, k))
        level0 = zarr.open_group(str(tomo_path(tomo_root, k)), mode="r")["0"][...]
        np.testing.assert_array_equal(level0, truth.image)  # what was written is the truth's
        centres, types = [], []
        for p in synth.PARTICLES:
            doc = json.loads(picks_path(tomo_root, k, p.name).read_text())
            assert doc["pickable_object_name"] == p.name
            assert doc["run_name"] == f"TS_{k}"
            assert doc["unit"] == "angstrom" and doc["voxel_spacing"] is None
            assert doc["user_id"] == "curation" and doc["session_id"] == "0"
            assert all(pt["transformation_"] == np.eye(4).tolist() for pt in doc["points"])
            zyx = read_picks_zyx(picks_path(tomo_root, k, p.name)) / 10.0
            assert len(zyx) >= 2  # several of each type
            centres.append(zyx)
            types += [p.label] * len(zyx)
        zyx = np.concatenate(centres)
        radii = np.asarray([synth.PARTICLES[t - 1].radius_voxels for t in types])
        # inside the volume, whole particles included
        assert np.all(zyx - radii[:, None] >= 0) and np.all(zyx + radii[:, None] <= shape - 1)
        # each pick is on its own particle: the label map there has its type and one instance
        idx = tuple(np.rint(zyx).astype(int).T)
        assert np.array_equal(truth.labels[idx], types)
        assert len(set(truth.instances[idx].tolist())) == len(types)
        # non-overlapping
        dist = np.linalg.norm(zyx[:, None] - zyx[None], axis=2)
        gap = dist - radii[:, None] - radii[None]
        assert np.all(gap[~np.eye(len(zyx), dtype=bool)] > 0)
        # solid particles are brighter at their centre than the volume around them
        solid = np.isin(types, [2, 4, 5])
        assert truth.image[idx][solid].mean() > truth.image.mean() + 1.0 * truth.image.std()


def test_tomogram_is_not_trivially_thresholdable() -> None:
    truth = synth.render_tomogram(TOMO_SMALL, 0)
    inside = truth.labels > 0
    # a threshold picking as many voxels as the particles hold catches well under all of them
    thr = np.quantile(truth.image, 1 - inside.mean())
    recall = (truth.image[inside] > thr).mean()
    assert 0.15 < recall < 0.85


# --- nuclei -------------------------------------------------------------------------------------


def test_nuclei_layout_and_classes(nuclei_root: Path) -> None:
    rows = read_csv(nuclei_root / "classes.csv")
    assert rows[0] == ["sample", "class"]
    names = [r[0] for r in rows[1:]]
    assert names == [f"{k:04d}" for k in range(1, 25)]
    counts = {c: sum(r[1] == c for r in rows[1:]) for c in synth.CLASSES}
    assert counts == {c: 8 for c in synth.CLASSES}
    for name in names:
        raw_files = sorted(p.name for p in (nuclei_root / name / "raw").iterdir())
        assert raw_files == [f"z{z:04d}.tif" for z in range(24)]
        assert sorted(p.name for p in (nuclei_root / name / "mask").iterdir()) == raw_files
    raw = read_slices(nuclei_root / "0001" / "raw")
    mask = read_slices(nuclei_root / "0001" / "mask")
    assert raw.shape == mask.shape == (24, 48, 48)
    assert raw.dtype == np.uint16 and mask.dtype == np.uint8


def test_nuclei_differ_by_texture_not_brightness(nuclei_root: Path) -> None:
    rows = read_csv(nuclei_root / "classes.csv")[1:]
    means: dict[str, list[float]] = {c: [] for c in synth.CLASSES}
    coarse: dict[str, list[float]] = {c: [] for c in synth.CLASSES}
    fine: dict[str, list[float]] = {c: [] for c in synth.CLASSES}
    for name, cls in rows:
        raw = read_slices(nuclei_root / name / "raw").astype(np.float64)
        mask = read_slices(nuclei_root / name / "mask")
        assert set(np.unique(mask)) == {0, 1}
        assert 0.05 < mask.mean() < 0.6
        inner = ndimage.binary_erosion(mask.astype(bool), iterations=2)
        mu = raw[mask == 1].mean()
        assert mu > raw[mask == 0].mean() * 3  # the nucleus stands out from the background
        means[cls].append(mu)
        smooth1 = ndimage.gaussian_filter(raw, 1.0)
        fine[cls].append((raw - smooth1)[inner].std() / mu)
        coarse[cls].append((smooth1 - ndimage.gaussian_filter(raw, 3.0))[inner].std() / mu)
    class_means = np.asarray([np.mean(means[c]) for c in synth.CLASSES])
    assert class_means.max() / class_means.min() < 1.05  # levels jitter +-5% per nucleus
    avg = {c: (np.mean(fine[c]), np.mean(coarse[c])) for c in synth.CLASSES}
    # condensed: coarse clumps; speckled: sharp foci; granular: neither at these scales
    assert avg["condensed"][1] > 1.5 * avg["granular"][1]
    assert avg["speckled"][0] > 1.5 * max(avg["condensed"][0], avg["granular"][0])


def test_nucleus_kernel_matches_files(nuclei_root: Path) -> None:
    rows = read_csv(nuclei_root / "classes.csv")[1:]
    name, cls = rows[4]
    nuc = synth.render_nucleus(synth.CLASSES.index(cls), _nuclei.DEFAULT_SIZE, (3, 5))
    np.testing.assert_array_equal(read_slices(nuclei_root / name / "raw"), nuc.raw)
    np.testing.assert_array_equal(read_slices(nuclei_root / name / "mask"), nuc.mask)


# --- spots --------------------------------------------------------------------------------------


def _table(root: Path) -> np.ndarray:
    """spots.csv as integers: z, y, x and the label's class id (false 0, true 1)."""
    rows = read_csv(root / "spots.csv")[1:]
    return np.asarray([[*r[:3], ("false", "true").index(r[3])] for r in rows], dtype=np.int64)


def test_spots_layout_and_table(spots_root: Path) -> None:
    with tifffile.TiffFile(spots_root / "spots.tif") as tif:
        assert len(tif.pages) == 32
        image = tif.asarray()
    assert image.shape == (32, 128, 128) and image.dtype == np.uint16
    rows = read_csv(spots_root / "spots.csv")
    assert rows[0] == ["z", "y", "x", "label"]
    assert {r[3] for r in rows[1:]} == {"false", "true"}  # class names, not 0 and 1
    table = _table(spots_root)
    assert len(table) == 200
    zyx, labels = table[:, :3], table[:, 3]
    lo, hi = np.asarray([4, 6, 6]), np.asarray(image.shape) - 1 - np.asarray([4, 6, 6])
    assert np.all(zyx >= lo) and np.all(zyx <= hi)
    assert set(labels.tolist()) == {0, 1}
    assert abs(int(labels.sum()) - 100) <= 1
    truth = synth.render_spots(_spots.DEFAULT_SIZE, None, 3)
    np.testing.assert_array_equal(image, truth.image)
    np.testing.assert_array_equal(zyx, truth.coords)
    assert {k for k in truth.kinds if k != "spot"} == set(synth.FALSE_KINDS)


def test_spot_crops_are_learnable_but_not_trivial(spots_root: Path) -> None:
    image = tifffile.imread(spots_root / "spots.tif").astype(np.float64)
    table = _table(spots_root)
    crops = np.stack([image[z - 4 : z + 5, y - 5 : y + 6, x - 5 : x + 6] for z, y, x, _ in table])
    assert crops.shape == (200, 9, 11, 11)
    labels = table[:, 3]

    def auc(score: np.ndarray) -> float:
        pos, neg = score[labels == 1], score[labels == 0]
        return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())

    centre = crops[:, 4, 5, 5] - np.median(crops, axis=(1, 2, 3))
    assert 0.55 < auc(centre) < 0.9  # brightness alone does not do it
    # a PSF-shaped matched filter does better: the labels are in the shape
    g = np.exp(-0.5 * ((np.arange(9) - 4)[:, None, None] ** 2 / 2.2**2
                       + (np.arange(11) - 5)[None, :, None] ** 2 / 1.2**2
                       + (np.arange(11) - 5)[None, None, :] ** 2 / 1.2**2))  # fmt: skip
    g = (g - g.mean()) / np.linalg.norm(g - g.mean())
    flat = crops - crops.mean(axis=(1, 2, 3), keepdims=True)
    corr = (flat * g).sum(axis=(1, 2, 3)) / np.sqrt((flat**2).sum(axis=(1, 2, 3)))
    assert auc(corr) > auc(centre)


# --- safety, scaling, progress ------------------------------------------------------------------


@pytest.mark.parametrize("kind", synth.KINDS)
def test_refuses_non_empty_out_unless_overwrite(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out"):
        synth.make(kind, out, **SMALL[kind])
    assert (out / "keep.txt").read_text() == "mine"
    synth.make(kind, out, overwrite=True, **SMALL[kind])
    assert not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    synth.make(kind, empty, **SMALL[kind])  # an empty folder is fine
    assert any(empty.iterdir())


def test_file_as_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        synth.make("spots", tmp_path / "f", **SMALL["spots"])


def test_crash_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    def boom(_: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        synth.make("nuclei", tmp_path / "out", progress=boom, **SMALL["nuclei"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", synth.KINDS)
def test_progress_counts_total_steps(tmp_path: Path, kind: str) -> None:
    calls: list[int] = []
    synth.make(kind, tmp_path / "o", progress=calls.append, **SMALL[kind])
    assert sum(calls) == synth.total_steps(kind, SMALL[kind]["n"])
    assert synth.total_steps("tomograms") == 2 and synth.total_steps("nuclei") == 24


def test_n_and_size_scale_the_output(tmp_path: Path) -> None:
    t = synth.make("tomograms", tmp_path / "t", n=3, size=(48, 64, 80))
    runs = sorted(p.name for p in (t / "static/ExperimentRuns").iterdir())
    assert runs == ["TS_0", "TS_1", "TS_2"]
    assert sorted(p.name for p in (t / "overlay/ExperimentRuns").iterdir()) == runs
    assert zarr.open_group(str(tomo_path(t, 2)), mode="r")["0"].shape == (48, 64, 80)
    # more volume, more particles
    small = _tomograms.particles_per_type((48, 64, 80))
    assert small < _tomograms.particles_per_type((96, 192, 192))

    nu = synth.make("nuclei", tmp_path / "n", n=5, size=16)
    assert len(read_csv(nu / "classes.csv")) == 6
    assert read_slices(nu / "0005" / "raw").shape == (16, 16, 16)
    assert read_slices(nu / "0005" / "mask").shape == (16, 16, 16)

    sp = synth.make("spots", tmp_path / "s", n=40, size=SPOT_SMALL)
    assert tifffile.imread(sp / "spots.tif").shape == SPOT_SMALL
    assert len(read_csv(sp / "spots.csv")) == 41
    assert synth.default_candidates((64, 256, 256)) == 1600


# --- read back with streamvol.io ----------------------------------------------------------------


def test_open_volume_reads_what_was_written(
    tomo_root: Path, nuclei_root: Path, spots_root: Path
) -> None:
    io = pytest.importorskip("streamvol.io")
    truth = synth.render_tomogram(_tomograms.DEFAULT_SIZE, (3, 0))
    v0 = io.open_volume(tomo_path(tomo_root, 0), level=0)
    assert v0.voxel_size == (10.0, 10.0, 10.0)
    np.testing.assert_array_equal(v0.data.compute(), truth.image)
    v1 = io.open_volume(tomo_path(tomo_root, 0), level=1)
    assert v1.voxel_size == (20.0, 20.0, 20.0)
    assert v1.shape == (32, 64, 64)

    raw = io.open_volume(nuclei_root / "0003" / "raw")
    np.testing.assert_array_equal(raw.data.compute(), read_slices(nuclei_root / "0003" / "raw"))
    mask = io.open_mask(nuclei_root / "0003" / "mask", raw)
    assert mask.data.compute().sum() > 0

    stack = io.open_volume(spots_root / "spots.tif")
    np.testing.assert_array_equal(stack.data.compute(), tifffile.imread(spots_root / "spots.tif"))


def test_discover_finds_each_layout(tomo_root: Path, nuclei_root: Path, spots_root: Path) -> None:
    io = pytest.importorskip("streamvol.io")
    from streamvol.io._discover import load_points

    ds = io.discover(tomo_root)
    assert ds.layout == "copick"
    assert [s.id for s in ds.sources] == ["TS_0", "TS_1"]
    assert ds.sources[1].image == tomo_path(tomo_root, 1)
    assert all(len(s.picks) == len(synth.PARTICLES) for s in ds.sources)
    assert ds.class_names == tuple(p.name for p in synth.PARTICLES)
    assert ds.radii == {p.name: p.radius for p in synth.PARTICLES}
    truth = synth.render_tomogram(_tomograms.DEFAULT_SIZE, (3, 0))
    points = load_points(ds.sources[0], io.open_volume(ds.sources[0].image), ds)
    got = sorted(zip(map(tuple, points.zyx.tolist()), (points.labels + 1).tolist(), strict=True))
    want = sorted(
        zip(map(tuple, truth.centres.astype(float).tolist()), truth.types.tolist(), strict=True)
    )
    assert got == want

    ds = io.discover(nuclei_root)
    assert ds.layout == "samples"
    rows = read_csv(nuclei_root / "classes.csv")[1:]
    assert [(s.id, s.class_name) for s in ds.sources] == [tuple(r) for r in rows]
    assert all(s.mask == nuclei_root / s.id / "mask" for s in ds.sources)
    assert ds.class_names == synth.CLASSES

    ds = io.discover(spots_root)
    assert ds.layout == "volumes"
    (spec,) = ds.sources
    assert (spec.image, spec.spots) == (spots_root / "spots.tif", spots_root / "spots.csv")
    points = load_points(spec, io.open_volume(spec.image), ds)
    table = _table(spots_root)
    np.testing.assert_array_equal(points.zyx, table[:, :3])
    assert points.class_names == ("false", "true")
    assert points.labels.tolist() == table[:, 3].tolist()
