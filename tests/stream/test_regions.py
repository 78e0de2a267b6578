"""Region shard sets: each volume stored once, crops drawn afresh every epoch, every loader
contract kept (exactly once, equal work, keyed draws, resume, exact length)."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import streamvol
from streamvol.augment import Augment, Flip, Rotate
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.stream import DevicePrefetcher, open_shards
from streamvol.stream.draw import DrawCrop, Window, cut, reflect_index

SHAPE = (20, 28, 24)
PICKS = 6  # per volume

# These detection sets test the loader's contracts and have no particle radii on purpose
# (negatives then keep a voxel's distance); the sharder's warning that `train` needs them is
# tested in tests/shard/test_radius.py.
pytestmark = pytest.mark.filterwarnings("ignore:.*detection set.*:UserWarning")


def _volumes(folder, n=4, *, mask=False, seed=0):
    """``n`` float32 volumes, each with a spot table of PICKS picks (two classes) and, with
    ``mask``, a mask holding a ball of radius 2 around every pick (labelled by its class)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    zz, yy, xx = np.indices(SHAPE)
    for i in range(n):
        image = rng.normal(100, 10, SHAPE).astype(np.float32)
        picks = rng.uniform([1, 1, 1], np.array(SHAPE) - 2, size=(PICKS, 3)).round(1)
        rows = ["z,y,x,label"] + [
            f"{z},{y},{x},{'a' if k % 2 else 'b'}" for k, (z, y, x) in enumerate(picks)
        ]
        (folder / f"v{i}.csv").write_text("\n".join(rows) + "\n")
        np.save(folder / f"v{i}.npy", image)
        if mask:
            labels = np.zeros(SHAPE, np.uint8)
            for k, (z, y, x) in enumerate(np.floor(picks + 0.5)):
                ball = (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 4
                labels[ball] = 1 + (k % 2 == 0)
            np.save(folder / f"v{i}_mask.npy", labels)
    return folder


def _regions(root, name="regions", **options):
    src = root / f"{name}-src"
    if not src.exists():
        _volumes(src, mask=options.pop("mask", False))
    options.pop("mask", None)
    out = root / name
    defaults = {"plan": "regions", "crop": 8, "split": "1", "task": "detection"}
    shard(parse_config([src], **{**defaults, **options}), out)
    return out


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    # 4 volumes x (6 picks + 6 negatives) = 48 units, 2 regions a tar
    return _regions(tmp_path_factory.mktemp("r"), negatives=1, shard_size=2)


def _keys(folder):
    return [
        f"{key}_u{j}"
        for shards in read_manifest(folder)["splits"].values()
        for rec in shards
        for key, n in zip(rec["keys"], rec["units"], strict=True)
        for j in range(n)
    ]


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_unit_once_and_equal_work(regions, workers, world):
    keys = _keys(regions)
    assert len(keys) == 48
    real, per_rank = [], []
    for rank in range(world):
        ds = open_shards(regions, rank=rank, world_size=world)
        dl = streamvol.loader(ds, batch_size=5, num_workers=workers, persistent_workers=False)
        got = [(k, float(w)) for b in dl for k, w in zip(b["__key__"], b["weight"], strict=True)]
        assert len(got) == len(ds)
        per_rank.append(len(got))
        real += [k for k, w in got if w == 1.0]
    assert len(set(per_rank)) == 1
    assert sorted(real) == sorted(keys)


def _centres(folder, epoch, workers):
    """Each unit's crop in ``epoch``: its image bytes, by key (no augmentation)."""
    ds = open_shards(folder, normalize=False)
    ds.set_epoch(epoch)
    dl = streamvol.loader(ds, batch_size=4, num_workers=workers, persistent_workers=False)
    return {k: b["image"][i].numpy().tobytes() for b in dl for i, k in enumerate(b["__key__"])}


def test_positions_are_new_each_epoch_and_the_same_for_any_workers(tmp_path):
    folder = _regions(tmp_path, negatives=1, max_shift=2)
    first, again, other = _centres(folder, 0, 0), _centres(folder, 0, 2), _centres(folder, 1, 0)
    assert first == again
    assert first.keys() == other.keys()
    moved = sum(first[k] != other[k] for k in first)
    assert moved > 0.8 * len(first)  # picks jitter by up to 2 voxels, negatives move anywhere


@pytest.mark.parametrize("pad", ["reflect", "zero"])
def test_a_crop_past_the_edge_equals_the_padded_volume(tmp_path, pad):
    """Without augmentation, every drawn crop (many reach past an edge: picks lie within a
    voxel of it) is the crop of the whole volume padded by ``np.pad``, bit for bit."""
    crop = (8, 10, 12)
    folder = _regions(tmp_path, pad=pad, crop=",".join(map(str, crop)))
    manifest = read_manifest(folder)
    width = 12
    padded = {
        m["id"]: np.pad(np.load(m["path"]), width, mode="constant" if pad == "zero" else "reflect")
        for m in manifest["sources"]
    }
    ds = open_shards(folder, normalize=False)
    edge = 0
    for sample in ds:
        key, j = sample["__key__"].rsplit("_u", 1)
        meta, points = _region(folder, key)
        centre, _ = ds.draw.position(meta, points, int(j), 0)
        start = [c - k // 2 + width for c, k in zip(centre, crop, strict=True)]
        box = tuple(slice(s, s + k) for s, k in zip(start, crop, strict=True))
        np.testing.assert_array_equal(sample["image"][0].numpy(), padded[meta["source"]][box])
        reaches = zip(start, crop, SHAPE, strict=True)
        edge += any(s < width or s + k > n + width for s, k, n in reaches)
    assert edge > 0


def _stored_regions(folder):
    from streamvol.stream.decode import iter_tar

    return [r for tar in sorted(folder.glob("*.tar")) for r in iter_tar(tar)]


def _region(folder, key):
    """(json, points) of the stored region ``key``."""
    region = next(r for r in _stored_regions(folder) if r["__key__"] == key)
    return region["json"], region["points.npy"]


def test_reflect_index_is_numpys_reflect_padding():
    for n in (1, 2, 3, 7):
        values = np.arange(n) * 10
        padded = np.pad(values, 25, mode="reflect")
        index = reflect_index(np.arange(-25, n + 25), n)
        np.testing.assert_array_equal(values[index], padded)


def test_cut_refuses_to_read_past_a_tile_inside_the_volume():
    region = np.zeros((10, 10, 10), np.float32)
    with pytest.raises(ValueError, match="inside the volume"):
        cut(region, (-2, 0, 0), (4, 4, 4), origin=(5, 0, 0), volume_shape=(30, 10, 10), pad="zero")


def test_a_picks_mask_lands_on_its_moved_point_under_rotation(tmp_path):
    """Free rotation and flips: each pick's mask ball is centred, within a voxel, on where the
    pick moved, with the pick's class; the crop's points are the picks inside it."""
    folder = _regions(tmp_path, mask=True, crop=12, task="segmentation")
    spec = Augment(rotate=Rotate(mode="free"), flip=Flip(p=0.5))
    ds = open_shards(folder, augment=spec, normalize=False)
    grid = np.indices((12, 12, 12)).reshape(3, -1).T
    checked = 0
    for sample in ds:
        mask, points = sample["mask"].numpy().reshape(-1), sample["points"].numpy()
        assert len(points) and (points[:, :3] >= -0.5).all() and (points[:, :3] < 11.5).all()
        for z, y, x, cls in points:
            p = np.array([z, y, x])
            others = np.abs(points[:, :3] - p).sum(axis=1)
            if ((p < 2.5) | (p > 8.5)).any() or (np.sort(others)[1:] < 7).any():
                continue  # its ball leaves the crop, or touches another pick's
            near = ((grid - p) ** 2).sum(axis=1) <= 2.5**2
            labelled = grid[near & (mask > 0)]
            assert len(labelled) >= 7
            assert set(mask[near & (mask > 0)].tolist()) == {int(cls) + 1}
            assert np.abs(labelled.mean(axis=0) - p).max() <= 1.0
            checked += 1
    assert checked >= 10


def test_negatives_keep_their_distance_from_every_pick(tmp_path):
    """Each negative lies at least its particle radius from every pick (4 voxels here; a
    quarter of the volume is that close to one of its six picks), every epoch."""
    folder = _regions(tmp_path, negatives=3)
    manifest = read_manifest(folder)
    assert "radii_voxels" not in manifest  # spot tables carry no radius: a voxel's distance
    ds = open_shards(folder)
    draw = dataclasses.replace(ds.draw, radii=(0.0, 4.0, 4.0))  # background, a, b
    checked = 0
    for region in _stored_regions(folder):
        meta, points = region["json"], region["points.npy"]
        per_point, negatives, _ = meta["units"]
        for epoch in range(3):
            for j in range(per_point, per_point + negatives):
                centre, label = draw.position(meta, points, j, epoch)
                gaps = np.sqrt(((points[:, :3] - centre) ** 2).sum(axis=1))
                assert label == 0 and (gaps >= 4.0).all()
                checked += 1
    assert checked == 4 * 18 * 3


def test_both_backends_give_a_region_set_the_same_images(regions):
    """The default preset, on the CPU backend (which cuts only the part of the block its draw
    reads) and on the GPU backend run on the CPU device (the whole block): the same images,
    gamma and contrast taking the whole block's statistics on both."""

    def images(device):
        ds = open_shards(regions, augment="default", augment_device=device, seed=5)
        batches = streamvol.loader(ds, batch_size=4, num_workers=0)
        if device == "gpu":
            batches = DevicePrefetcher(batches, "cpu")
        return {k: b["image"][i] for b in batches for i, k in enumerate(b["__key__"])}

    cpu, gpu = images("cpu"), images("gpu")
    assert cpu.keys() == gpu.keys() and len(cpu) == len(_keys(regions))
    for k in cpu:
        assert torch.allclose(cpu[k], gpu[k], atol=1e-4), k


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_remainder(regions, workers, tmp_path):
    ds = open_shards(regions, seed=3)
    ds.set_epoch(1)
    dl = streamvol.loader(ds, batch_size=4, num_workers=workers, persistent_workers=False)
    seen = []
    for i, b in enumerate(dl):
        seen += b["__key__"]
        if i == 4:
            break
    torch.save(dl.state_dict(), tmp_path / "s.pt")
    again = open_shards(regions, seed=3)
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    rest = [
        k for b in streamvol.loader(again, batch_size=4, num_workers=workers) for k in b["__key__"]
    ]
    assert collections.Counter(seen + rest) == collections.Counter(_keys(regions))


def test_regions_cost_the_source_bytes(tmp_path):
    """Stored once: the tars hold at most 1.1x the volumes' bytes (a points plan of the same
    crops would hold one margin-padded block per pick)."""
    folder = _regions(tmp_path, negatives=1)
    source = sum(np.load(m["path"]).nbytes for m in read_manifest(folder)["sources"])
    stored = sum(p.stat().st_size for p in folder.glob("*.tar"))
    assert stored <= 1.1 * source


def test_tiles_split_a_large_volume_and_their_crops_match_the_whole(tmp_path):
    """With --region-max below a volume's bytes it is stored as tiles whose cores partition it;
    each pick's crop with free rotation's margin, cut from its tile, equals the crop of the
    whole padded volume, also next to a tile's interior sides."""
    crop = (8, 8, 8)
    # free rotation of an 8^3 crop needs 3 voxels a side: tiles overlap by 4 + 3 inside
    tiled = _regions(tmp_path, name="tiled", negatives=1, context=3, region_max=36000)
    manifest = read_manifest(tiled)
    assert manifest["plan"]["tiled"] and manifest["plan"]["regions"] > 4
    assert manifest["counts"] == {"train": 48}
    margin = Augment(rotate=Rotate(mode="free")).margin(crop)
    assert margin == (3, 3, 3)
    draw = DrawCrop(crop=crop, margin=margin)
    size = tuple(c + 2 * m for c, m in zip(crop, margin, strict=True))
    width = max(size)
    padded = {m["id"]: np.pad(np.load(m["path"]), width, "reflect") for m in manifest["sources"]}
    cores = collections.Counter()
    crops = 0
    for region in _stored_regions(tiled):
        meta, points = region["json"], region["points.npy"]
        origin = np.asarray(meta["origin"])
        core = np.asarray(meta["core"])
        cores[meta["source"]] += int(np.prod(core[:, 1] - core[:, 0]))
        for j in range(meta["units"][0]):
            unit = {"__region__": region, "__unit__": j, "__key__": "k", "__pos__": 0, "weight": 1}
            block = draw(unit, epoch=0)["image.npy"].cut()
            centre, _ = draw.position(meta, points, j, 0)
            start = origin + centre - np.asarray(crop) // 2 - margin + width
            box = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
            np.testing.assert_array_equal(block, padded[meta["source"]][box])
            crops += 1
    assert crops == 4 * PICKS
    assert set(cores.values()) == {int(np.prod(SHAPE))}  # the cores partition each volume


def test_inspect_summarises_regions_and_previews_drawn_crops(regions, tmp_path):
    from typer.testing import CliRunner

    from streamvol.cli import app

    result = CliRunner().invoke(
        app, ["inspect", str(regions), "--verify", "--preview", str(tmp_path / "p.png")]
    )
    assert result.exit_code == 0, result.output
    assert "regions" in result.output and "48" in result.output
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert json.loads((regions / "manifest.json").read_text())["plan"]["regions"] == 4


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 9)] * 3),
    start=st.tuples(*[st.integers(-20, 12)] * 3),
    size=st.tuples(*[st.integers(1, 20)] * 3),
    pad=st.sampled_from(["reflect", "zero"]),
    dtype=st.sampled_from([np.float32, np.uint8, np.float16]),
)
def test_cut_equals_numpys_padding(shape, start, size, pad, dtype):
    """Any box of a whole volume, inside, across or far past its edges: the slice of the
    volume padded by np.pad, bit for bit; and the window's min, max and mean, read without
    cutting it (gamma's range and contrast's centre on the CPU backend), numpy's over that."""
    volume = (np.arange(np.prod(shape)) * 7 % 251 + 3).astype(dtype).reshape(shape)
    got = cut(volume, start, size, (0, 0, 0), shape, pad)
    width = 40
    padded = np.pad(volume, width, mode="constant" if pad == "zero" else "reflect")
    box = tuple(slice(s + width, s + width + n) for s, n in zip(start, size, strict=True))
    np.testing.assert_array_equal(got, padded[box])
    block = padded[box]
    stats = Window(volume, start, size, (0, 0, 0), shape, pad).stats()
    expected = block.min(), block.max(), block.mean(dtype=np.float64)
    np.testing.assert_allclose(stats, expected, rtol=1e-12)


def test_each_region_is_read_once_per_reader_per_epoch(regions, monkeypatch):
    """Over a URL a region is fetched once for all its crops (here: one reader, 4 regions),
    not once per crop."""
    import streamvol.stream.stages as dataset

    reads = collections.Counter()
    real = dataset.iter_samples

    def counting(f, url, **options):
        for sample in real(f, url, **options):
            reads[sample["__key__"]] += 1
            yield sample

    monkeypatch.setattr(dataset, "iter_samples", counting)
    ds = open_shards(f"file://{regions}")
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 48 and len(reads) == 4 and set(reads.values()) == {1}


@pytest.mark.parametrize("sample", [None, 500])  # every voxel, or every 3rd along each axis
def test_statistics_gathered_while_writing_tiles_equal_numpys(tmp_path, monkeypatch, sample):
    """A region set gathers its intensity statistics from each region's core as it writes it
    (no pass before): over overlapping tiles they equal numpy's over the volumes, and the
    percentiles those of the volumes' grid of every step-th voxel, as the points plan's."""
    from streamvol.io import open_volume
    from streamvol.shard.manifest import intensity_stats, sample_step

    if sample:
        monkeypatch.setattr("streamvol.shard.manifest._PERCENTILE_SAMPLE", sample)
    tiled = _regions(tmp_path, name="tiled", context=3, region_max=36000)
    manifest = read_manifest(tiled)
    assert manifest["plan"]["regions"] > 4
    stats = manifest["stats"]
    volumes = [np.load(m["path"]) for m in manifest["sources"]]
    every = np.concatenate([v.ravel() for v in volumes]).astype(np.float64)
    assert stats["mean"] == pytest.approx(every.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(every.std(), rel=1e-6)
    assert (stats["min"], stats["max"]) == (every.min(), every.max())
    step = sample_step(SHAPE)
    assert step == (3 if sample else 1)
    grid = np.concatenate([v[::step, ::step, ::step].ravel() for v in volumes])
    expected = np.percentile(grid.astype(np.float64), [0.5, 99.5])
    assert [stats["p0_5"], stats["p99_5"]] == pytest.approx(expected, rel=1e-12)
    before = intensity_stats([open_volume(m["path"]) for m in manifest["sources"]])
    assert (before["p0_5"], before["p99_5"]) == (stats["p0_5"], stats["p99_5"])


def test_a_resumed_region_set_has_the_same_statistics(tmp_path):
    """Shards a rerun keeps are not rewritten, so their regions' statistics are read afresh:
    the manifest's statistics equal those of the run that wrote every shard."""
    tiled = _regions(tmp_path, name="tiled", context=3, region_max=36000, shard_size=2)
    first = read_manifest(tiled)
    tars = sorted(tiled.glob("*.tar"))
    assert len(tars) > 2
    tars[1].unlink()
    config = parse_config(
        [tmp_path / "tiled-src"],
        plan="regions",
        crop=8,
        split="1",
        task="detection",
        context=3,
        region_max=36000,
        shard_size=2,
    )
    result = shard(config, tiled)
    assert result.written == [tars[1].name]
    assert read_manifest(tiled)["stats"] == first["stats"]


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [(np.nan, "keep", r"v2\.npy: NaN or Inf"), (1e6, "float16", r"v2\.npy.*float16's range")],
)
def test_a_bad_region_is_refused_before_its_tar_and_the_rest_is_kept(
    tmp_path, value, dtype, message
):
    """A region set checks each region just before writing it: a NaN (or a value float16
    cannot hold) is refused naming the file, and the folder holds no tar and no manifest; the
    shards finished before wait under its state (none holds that region), and once the file is
    fixed a rerun keeps them."""
    from streamvol.errors import BadVolumeValues

    src = _volumes(tmp_path / "src")
    good = np.load(src / "v2.npy")
    bad = good.copy()
    bad[3, 4, 5] = value
    np.save(src / "v2.npy", bad)
    out = tmp_path / "set"
    options = {"plan": "regions", "crop": 8, "split": "1", "dtype": dtype, "shard_size": 1}
    with pytest.raises(BadVolumeValues, match=message):
        shard(parse_config([src], **options), out, workers=1)
    assert sorted(p.name for p in out.iterdir()) == [".streamvol"]
    state = out / ".streamvol"
    finished = sorted(p.name for p in state.glob("*.tar"))
    assert finished  # one worker writes the shards in order: v2's comes after others
    assert all(r["json"]["source"] != "v2" for r in _stored_regions(state))
    np.save(src / "v2.npy", good)
    result = shard(parse_config([src], **options), out, workers=1)
    assert result.skipped == finished
    assert len(result.written) + len(finished) == 4
    assert len(_stored_regions(out)) == 4 and not state.exists()
