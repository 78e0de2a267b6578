"""The loader's contracts on real shards written by the sharder: exactly once, equal work per
rank, keyed order, resume, safe decoding, exact len, fsspec URLs."""

from __future__ import annotations

import collections
import io
import re
import tarfile

import numpy as np
import pytest
import torch

import streamvol
from streamvol.errors import ShardError, UnsafeMember
from streamvol.shard import parse_config, read_manifest, shard
from streamvol.stream import DevicePrefetcher, collate, open_shards
from streamvol.stream.epoch import rank_plan


def _make(tmp_path, name, n_sources, shard_size, shape=(4, 8, 12)):
    src = tmp_path / f"{name}-src"
    src.mkdir()
    rng = np.random.default_rng(len(name))
    for i in range(n_sources):
        np.save(src / f"v{i}.npy", rng.normal(10, 2, shape).astype(np.float32))
    out = tmp_path / name
    shard(parse_config([src], crop=4, context=1, split="1", shard_size=shard_size), out)
    return out


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    # 5 sources x 6 crops = 30 samples in shards of 7, 7, 7, 7, 2
    return _make(tmp_path_factory.mktemp("u"), "uneven", 5, 7)


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    # 10 samples in 2 shards (8 + 2): fewer shards than most readers
    return _make(tmp_path_factory.mktemp("f"), "few", 2, 8, shape=(4, 8, 20))


def _all_keys(folder):
    return [k for rec in read_manifest(folder)["splits"]["train"] for k in rec["keys"]]


def _run_rank(folder, rank, world, workers, batch=4, seed=0, epoch=0):
    ds = open_shards(folder, seed=seed, rank=rank, world_size=world)
    ds.set_epoch(epoch)
    dl = streamvol.loader(ds, batch_size=batch, num_workers=workers, persistent_workers=False)
    expected_batches = len(dl)
    got = []
    batches = 0
    for b in dl:
        batches += 1
        got += list(zip(b["__key__"], b["weight"].tolist(), strict=True))
    return got, batches, expected_batches, len(ds)


@pytest.mark.parametrize("shards", ["uneven", "few"])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_exactly_once_and_equal_work(request, shards, workers, world):
    folder = request.getfixturevalue(shards)
    keys = _all_keys(folder)
    real = []
    per_rank = []
    for rank in range(world):
        got, batches, expected_batches, length = _run_rank(folder, rank, world, workers)
        assert batches == expected_batches  # len(loader) is exact
        assert len(got) == length  # len(dataset) is exact
        per_rank.append(len(got))
        real += [k for k, w in got if w == 1.0]
        assert all(w in (0.0, 1.0) for _, w in got)
    assert len(set(per_rank)) == 1  # every rank yields the same number of samples
    assert sorted(real) == sorted(keys)  # exactly once, padding excluded
    assert per_rank[0] * world - len(keys) < world  # padding only to the next multiple


def test_samples_are_normalised_centre_crops(uneven):
    manifest = read_manifest(uneven)
    ds = open_shards(uneven, shuffle=False)
    mean, std = manifest["stats"]["mean"], manifest["stats"]["std"]
    from streamvol.stream.decode import iter_tar

    stored = {s["__key__"]: s for s in iter_tar(uneven / "train-000000.tar")}
    for sample in ds:
        if sample["__key__"] in stored:
            block = stored[sample["__key__"]]["image.npy"]
            expected = (block[1:-1, 1:-1, 1:-1] - mean) / std
            assert sample["image"].shape == (1, 4, 4, 4)
            assert sample["image"].dtype == torch.float32
            np.testing.assert_allclose(sample["image"][0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_order_comes_from_seed_and_epoch(uneven):
    def order(seed, epoch, workers):
        return [k for k, _ in _run_rank(uneven, 0, 1, workers, seed=seed, epoch=epoch)[0]]

    assert order(0, 0, 0) == order(0, 0, 0)
    assert order(0, 0, 2) == order(0, 0, 2)
    assert order(0, 0, 0) != order(0, 1, 0)
    assert order(0, 0, 0) != order(1, 0, 0)
    assert sorted(order(0, 0, 0)) == sorted(order(0, 1, 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_remainder(uneven, tmp_path, workers):
    ds = open_shards(uneven, seed=3)
    ds.set_epoch(2)
    dl = streamvol.loader(ds, batch_size=4, num_workers=workers)
    seen = []
    for i, batch in enumerate(dl):
        seen += batch["__key__"]
        if i == 2:
            break
    torch.save(dl.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)

    fresh = open_shards(uneven, seed=3)
    fresh.load_state_dict(state)
    again = streamvol.loader(fresh, batch_size=4, num_workers=workers)
    assert fresh.epoch == 2
    rest = [k for b in again for k in b["__key__"]]
    assert collections.Counter(seen + rest) == collections.Counter(_all_keys(uneven))
    assert len(rest) == 30 - len(seen)
    # then it continues normally: the next pass is a whole new epoch
    nxt = [k for b in again for k in b["__key__"]]
    assert fresh.epoch == 3 and sorted(nxt) == sorted(_all_keys(uneven))


def test_resume_state_must_match(uneven, few):
    state = open_shards(uneven).state_dict()
    with pytest.raises(ValueError, match="total"):
        open_shards(few).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        open_shards(uneven, rank=0, world_size=2).load_state_dict(state)


def _copy_with_member(src, dst, extra_name, extra_bytes):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            tout.addfile(member, tin.extractfile(member))
        info = tarfile.TarInfo(extra_name)
        info.size = len(extra_bytes)
        tout.addfile(info, io.BytesIO(extra_bytes))


def test_pickle_member_is_rejected_by_shard_and_key(uneven, tmp_path):
    evil = tmp_path / "evil.tar"
    _copy_with_member(uneven / "train-000004.tar", evil, "zz_z0_y0_x0.pyd", b"\x80\x04K\x01.")
    with pytest.raises(UnsafeMember, match=r"evil\.tar key zz_z0_y0_x0.*\.pyd"):
        list(open_shards([str(evil)], shuffle=False))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


CUBE = np.zeros((4, 4, 4), np.float32)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"image.npy": CUBE[0]}, r"image\.npy <f4 of shape \(4, 4\): expected real \(z, y, x\)"),
        ({"image.npy": CUBE.astype(np.complex64)}, r"image\.npy <c8 .*expected real"),
        ({"image.npy": CUBE.astype(">f4")}, r"image\.npy >f4 .*native byte order"),
        ({"image.npy": CUBE, "mask.npy": np.zeros((2, 4, 4), np.uint8)}, r"mask\.npy uint8"),
        ({"image.npy": CUBE, "mask.npy": CUBE}, r"mask\.npy float32 .*integer labels"),
        ({"image.npy": CUBE, "points.npy": np.ones((2, 3), np.float32)}, r"points\.npy .*\(N, 4\)"),
    ],
)
def test_arrays_no_writer_makes_are_refused_by_shard_and_key(tmp_path, members, match):
    """A foreign writer's sample (its checksums would match) is refused by shard and key."""
    path = tmp_path / "foreign.tar"
    with tarfile.open(path, "w") as tar:
        for suffix, array in members.items():
            data = _npy(array)
            info = tarfile.TarInfo(f"zz_z0_y0_x0.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match=rf"foreign\.tar key zz_z0_y0_x0: {match}"):
        list(open_shards([str(path)], shuffle=False))


def test_images_of_another_shape_than_the_manifest_are_refused_or_skipped(uneven, tmp_path):
    import json
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(uneven, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    stored = manifest["stored_shape"]
    manifest["stored_shape"] = [stored[0] + 1, *stored[1:]]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    want = re.escape(f"expected the stored shape {tuple(manifest['stored_shape'])}")
    with pytest.raises(ShardError, match=rf"train-\d+\.tar key \w+: image\.npy .*{want}"):
        list(open_shards(folder, shuffle=False))
    ds = open_shards(folder, shuffle=False, on_error="skip")
    assert list(ds) == [] and ds.errors == 30


def test_truncated_tar_raises_or_is_skipped(uneven, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(uneven, folder)
    victim = folder / "train-000001.tar"
    victim.write_bytes(victim.read_bytes()[:-3000])
    with pytest.raises(ShardError, match=r"train-000001\.tar"):
        list(open_shards(folder, shuffle=False))
    ds = open_shards(folder, shuffle=False, on_error="skip")
    keys = [s["__key__"] for s in ds]
    assert ds.errors == 1
    assert 23 <= len(keys) < 30  # the other shards whole, the cut one up to its damage
    lone = tmp_path / "cut.tar"  # without a manifest: the missing end-of-archive marker tells
    lone.write_bytes((uneven / "train-000000.tar").read_bytes()[:10240])
    with pytest.raises(ShardError, match=r"cut\.tar.*truncated"):
        open_shards([str(lone)])


def test_file_urls_and_brace_patterns(uneven):
    url = f"file://{uneven}"
    assert sorted(s["__key__"] for s in open_shards(url)) == sorted(_all_keys(uneven))
    pattern = f"file://{uneven}/train-{{000000..000004}}.tar"
    assert sorted(s["__key__"] for s in open_shards(pattern)) == sorted(_all_keys(uneven))


def test_tars_without_manifest_are_indexed(uneven, tmp_path):
    for i in range(5):
        (tmp_path / f"t{i}.tar").write_bytes((uneven / f"train-00000{i}.tar").read_bytes())
    ds = open_shards([str(tmp_path / f"t{i}.tar") for i in range(5)], rank=1, world_size=2)
    assert len(ds) == 15
    assert ds.counts == [7, 7, 7, 7, 2]


def test_unknown_split_is_named(uneven):
    with pytest.raises(ShardError, match=r"val.*train"):
        open_shards(uneven, split="val")
    with pytest.raises(ShardError, match="fold0"):
        open_shards(uneven, folds=[0])


def test_collate_pads_points_with_counts():
    samples = [
        {
            "__key__": "a",
            "__pos__": 0,
            "__epoch__": 0,
            "weight": 1.0,
            "image": torch.zeros(1, 2, 2, 2),
            "points": torch.ones(3, 4),
        },
        {
            "__key__": "b",
            "__pos__": 1,
            "__epoch__": 0,
            "weight": 0.0,
            "image": torch.ones(1, 2, 2, 2),
            "points": torch.zeros(0, 4),
        },
    ]
    batch = collate(samples)
    assert batch["points"].shape == (2, 3, 4)
    assert batch["points_count"].tolist() == [3, 0]
    assert batch["weight"].tolist() == [1.0, 0.0]
    assert batch["image"].shape == (2, 1, 2, 2, 2)


def test_rank_plan_is_a_partition_with_padding():
    counts = [5, 1, 7, 0, 3]
    for world in (1, 2, 3, 4, 7, 20):
        plans = [
            rank_plan(counts, seed=1, epoch=2, shuffle=True, rank=r, world_size=world)
            for r in range(world)
        ]
        real = sorted(
            (int(s), int(i))
            for p in plans
            for s, i, w in zip(p.shard, p.local, p.weight, strict=True)
            if w
        )
        assert real == sorted((s, i) for s, c in enumerate(counts) for i in range(c))
        assert len({len(p) for p in plans}) == 1


def test_device_prefetcher_is_a_cpu_pass_through(uneven):
    dl = streamvol.loader(open_shards(uneven), batch_size=8)
    batches = list(DevicePrefetcher(dl, "cpu"))
    assert sum(len(b["__key__"]) for b in batches) == 30
    assert all(b["image"].device.type == "cpu" for b in batches)


def test_freed_sample_memory_is_reused_not_faulted_in_again():
    import multiprocessing as mp

    # in a fresh process, so the setting does not leak into the other tests' process
    with mp.get_context("spawn").Pool(1) as pool:
        tuned, faults = pool.apply(_faults_per_block)
    if not tuned:
        pytest.skip("not glibc: nothing to tune")
    # a 4 MiB block is 1024 pages; untuned, glibc hands the freed batch back to the system and
    # about half of every block's pages fault in again (measured: ~500)
    assert faults < 50


def _faults_per_block() -> tuple[bool, float]:
    import resource

    from streamvol.core.heap import keep_freed_memory

    def batch() -> None:  # a few samples' blocks alive at once, then all freed
        for block in [np.empty(4 << 20, np.uint8) for _ in range(4)]:
            block.fill(1)

    tuned = keep_freed_memory("samples")
    batch()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        batch()
    return tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40


def test_a_worker_forked_from_a_cpu_trainer_keeps_what_samples_need(uneven, tmp_path, monkeypatch):
    """The trainer keeps every freed block for its steps; its forked loader workers, which hold
    samples only, set the samples' level afresh rather than inheriting the trainer's."""
    import sys

    from streamvol.core import heap

    loader_module = sys.modules["streamvol.stream.loader"]  # the package's `loader` is the function

    if not heap.keep_freed_memory("steps"):
        pytest.skip("not glibc: nothing to tune")
    seen = tmp_path / "kept"

    def recorded(*args, **kwargs) -> bool:
        kept = heap.keep_freed_memory(*args, **kwargs)
        seen.write_text(str(heap.kept()))
        return kept

    monkeypatch.setattr(loader_module, "keep_freed_memory", recorded)
    ds = open_shards(uneven, seed=0)
    with streamvol.loader(ds, batch_size=4, num_workers=1) as dl:
        next(iter(dl))
    assert seen.read_text() == "samples"
    assert heap.kept() == "steps"  # the trainer's own process keeps its level


def test_collate_passes_images_in_one_buffer_on_uncopied_and_stacks_the_rest():
    from streamvol.stream.loader import collate

    buf = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3)
    samples = [
        {"__key__": f"k{i}", "__pos__": i, "__epoch__": 0, "weight": 1.0, "image": buf[i]}
        for i in range(3)
    ]
    batch = collate(samples)
    assert batch["image"].data_ptr() == buf.data_ptr()
    assert torch.equal(batch["image"], buf[:3])
    shuffled = [samples[1], samples[0], samples[2]]
    batch = collate(shuffled)
    assert batch["image"].data_ptr() != buf.data_ptr()
    assert torch.equal(batch["image"], torch.stack([buf[1], buf[0], buf[2]]))
