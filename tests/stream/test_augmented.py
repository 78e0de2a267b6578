"""The loader with augmentation: a sample's tensor depends on (seed, epoch, key) only, and the
GPU backend (run here on a CPU device through DevicePrefetcher) matches the CPU backend."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

import streamvol
from streamvol.augment import Augment, Flip, Noise, Rotate
from streamvol.shard import parse_config, shard
from streamvol.stream import DevicePrefetcher, open_shards

SPEC = Augment(
    rotate=Rotate(mode="free"), flip=Flip(p=(0.5, 0.5, 0.5)), noise=Noise(std=(0.0, 0.2))
)
SMOOTH = Augment(rotate=Rotate(mode="free"), flip=Flip(p=(0.5, 0.5, 0.5)))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(src / f"v{i}.npy", rng.normal(5, 1, (6, 12, 12)).astype(np.float32))
    out = root / "shards"
    shard(parse_config([src], crop=6, augment="default", split="1", shard_size=5), out)
    return out


def _by_key(ds, workers, epoch):
    ds.set_epoch(epoch)
    dl = streamvol.loader(ds, batch_size=3, num_workers=workers, persistent_workers=False)
    return {k: b["image"][i] for b in dl for i, k in enumerate(b["__key__"])}


def test_same_key_same_tensor_whatever_the_workers(shards):
    a = _by_key(open_shards(shards, augment=SPEC, seed=7), 0, epoch=3)
    b = _by_key(open_shards(shards, augment=SPEC, seed=7), 2, epoch=3)
    assert a.keys() == b.keys() and len(a) == 12
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.shape == (1, 6, 6, 6) for v in a.values())


def test_augment_by_preset_name_is_that_preset_and_a_wrong_one_is_named(shards):
    """``open_shards`` takes ``--augment``'s values: a preset name draws as the preset's spec,
    ``"none"`` not at all; anything else is refused naming it."""
    by_name = _by_key(open_shards(shards, augment="flips", seed=7), 0, epoch=3)
    by_spec = _by_key(open_shards(shards, augment=Augment.preset("flips"), seed=7), 0, epoch=3)
    assert by_name.keys() == by_spec.keys() and len(by_name) == 12
    assert all(torch.equal(by_name[k], by_spec[k]) for k in by_name)
    plain = _by_key(open_shards(shards, augment=None, seed=7), 0, epoch=3)
    none = _by_key(open_shards(shards, augment="none", seed=7), 0, epoch=3)
    assert all(torch.equal(none[k], plain[k]) for k in plain)
    assert not all(torch.equal(by_name[k], plain[k]) for k in plain)
    with pytest.raises(ValueError, match=r"augment='sideways'.*flips"):
        open_shards(shards, augment="sideways")
    with pytest.raises(ValueError, match=r"augment=5.*expected an Augment"):
        open_shards(shards, augment=5)


def test_another_epoch_or_seed_draws_afresh(shards):
    e3 = _by_key(open_shards(shards, augment=SPEC, seed=7), 0, epoch=3)
    e4 = _by_key(open_shards(shards, augment=SPEC, seed=7), 0, epoch=4)
    s8 = _by_key(open_shards(shards, augment=SPEC, seed=8), 0, epoch=3)
    assert all(not torch.equal(e3[k], e4[k]) for k in e3)
    assert all(not torch.equal(e3[k], s8[k]) for k in e3)


def test_gpu_backend_through_the_prefetcher_matches_the_cpu_backend(shards):
    cpu = _by_key(open_shards(shards, augment=SMOOTH, seed=1), 0, epoch=0)
    ds = open_shards(shards, augment=SMOOTH, augment_device="gpu", seed=1)
    batches = DevicePrefetcher(streamvol.loader(ds, 3, 0), "cpu")  # the set's normalisation
    gpu = {k: b["image"][i] for b in batches for i, k in enumerate(b["__key__"])}
    assert gpu.keys() == cpu.keys()
    for k in cpu:
        assert torch.allclose(gpu[k], cpu[k], atol=1e-4), k


def test_tars_keep_their_folders_manifest_and_lone_tars_cannot_augment(shards, tmp_path):
    tars = sorted(str(p) for p in shards.glob("*.tar"))
    assert len(_by_key(open_shards(tars, augment=SPEC), 0, epoch=0)) == 12
    lone = tmp_path / "lone.tar"
    lone.write_bytes(Path(tars[0]).read_bytes())
    with pytest.raises(streamvol.errors.ShardError, match="crop size"):
        open_shards([str(lone)], augment=SPEC)


def test_augmentation_beyond_the_stored_margin_is_refused(shards):
    from streamvol.augment import Shift

    greedy = Augment(rotate=Rotate(mode="free"), shift=Shift(max=(20, 20, 20)))
    with pytest.raises(streamvol.errors.ShardError, match=r"margin of \[.*\].*needs"):
        open_shards(shards, augment=greedy)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_written_in_place_and_match_samples_augmented_alone(shards, workers):
    one_by_one = open_shards(shards, augment=SPEC, seed=7)  # no loader: no batch buffers
    one_by_one.set_epoch(2)
    alone = {s["__key__"]: s["image"] for s in one_by_one}
    ds = open_shards(shards, augment=SPEC, seed=7)
    ds.set_epoch(2)
    dl = streamvol.loader(ds, batch_size=5, num_workers=workers, persistent_workers=False)
    seen = 0
    for b in dl:
        image = b["image"]
        assert all(torch.equal(image[i], alone[k]) for i, k in enumerate(b["__key__"]))
        if workers == 0:  # from workers, the batch comes over a reused slot (test_slots)
            # written straight into a 5-slot batch buffer: a short last batch keeps the whole
            # buffer (a copy made by stacking would hold just its own samples)
            assert image.untyped_storage().nbytes() == 5 * image[0].nbytes
        seen += len(image)
    assert seen == len(alone) == 12


def _structure(value):
    """Type, dtype and shape of every leaf of a batch (tensors, BatchParams fields, lists)."""
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items() if k != "__timing__"}
    if hasattr(value, "__dataclass_fields__"):
        return {k: _structure(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape))
    return type(value).__name__


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_batches_from_workers_are_built_as_in_the_main_process(shards, device):
    """Workers send small tensors by value (not one shared-memory handle each); the loader
    hands the trainer the same tensors, dtypes and shapes either way."""
    first, rows = {}, {}
    for workers in (0, 2):
        ds = open_shards(shards, augment=SPEC, augment_device=device, seed=3)
        dl = streamvol.loader(ds, batch_size=4, num_workers=workers, persistent_workers=False)
        batches = list(dl)
        first[workers] = _structure(batches[0])
        rows[workers] = {
            key: (
                b["__pos__"][i],
                b["weight"][i],
                b["image"][i],
                b["params"].matrix[i] if device == "gpu" else None,
            )
            for b in batches
            for i, key in enumerate(b["__key__"])
        }
    assert first[0] == first[2]
    assert rows[0].keys() == rows[2].keys() and len(rows[0]) == 12
    for key, row in rows[0].items():
        assert all(
            a is b is None or torch.equal(a, b) for a, b in zip(row, rows[2][key], strict=True)
        )


def test_wire_sends_small_tensors_by_value_and_large_ones_as_they_are():
    from streamvol.stream.loader import WIRE_BYTES, _unwire, _wire

    small = torch.arange(6, dtype=torch.int64)
    large = torch.zeros(WIRE_BYTES // 4 + 1, dtype=torch.float32)
    sent = _wire({"a": small, "nested": {"b": large}, "n": 3})
    assert isinstance(sent["a"], np.ndarray) and sent["nested"]["b"] is large and sent["n"] == 3
    back = _unwire(sent)
    assert isinstance(back["a"], torch.Tensor) and torch.equal(back["a"], small)
    assert back["nested"]["b"] is large


def _images_alone(shards, epoch):
    ds = open_shards(shards, augment=SPEC, seed=5)  # no loader: no batch memory at all
    ds.set_epoch(epoch)
    return {s["__key__"]: s["image"] for s in ds}


def test_workers_reuse_batch_memory_freed_by_the_trainer(shards):
    """Batches dropped as they are used free their slots: two epochs of 2 workers fit in the
    slots, every one was taken once per batch and all are free at the end."""
    from streamvol.stream.slots import SLOTS

    ds = open_shards(shards, augment=SPEC, seed=5)
    dl = streamvol.loader(ds, batch_size=2, num_workers=2)
    addresses = set()
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        alone = _images_alone(shards, epoch)
        for b in dl:
            assert all(torch.equal(b["image"][i], alone[k]) for i, k in enumerate(b["__key__"]))
            addresses.add(b["image"].data_ptr())
        del b
    gc.collect()
    table = ds.slot_table
    assert len(addresses) <= len(table.mapped) <= 2 * SLOTS  # each slot mapped once
    assert list(table.counters[:2]) == [6, 6]  # 3 batches a worker an epoch, each took a slot
    assert not table.view().any()


def test_batches_a_trainer_keeps_are_never_overwritten(shards):
    """Holding every batch exhausts the slots: the worker then takes fresh memory, and no held
    batch changes while the others are made."""
    from streamvol.stream.slots import SLOTS

    ds = open_shards(shards, augment=SPEC, seed=5)
    ds.set_epoch(3)
    dl = streamvol.loader(ds, batch_size=1, num_workers=1, persistent_workers=False)
    kept = list(dl)
    alone = _images_alone(shards, 3)
    assert len(kept) == 12 > SLOTS
    assert all(torch.equal(b["image"][0], alone[b["__key__"][0]]) for b in kept)
    assert np.count_nonzero(ds.slot_table.view()) == SLOTS  # the other batches: fresh memory
    del kept
    gc.collect()
    assert not ds.slot_table.view().any()


def test_a_slot_is_freed_only_by_the_token_that_holds_it():
    from streamvol.stream.slots import SlotTable

    table = SlotTable()
    table.view()[3] = 7
    table.release(3, 8)  # a late release of an older batch
    assert table.view()[3] == 7
    table.release(3, 7)
    assert table.view()[3] == 0


def test_collate_in_a_plain_dataloader_returns_tensors(shards):
    """Only streamvol.loader's workers send small tensors by value: a plain DataLoader with
    streamvol's collate gets the batch collate made."""
    from torch.utils.data import DataLoader

    from streamvol.stream import collate

    ds = open_shards(shards, augment=SPEC, seed=5)
    for b in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate):
        assert "__slots__" not in b
        assert all(isinstance(b[k], torch.Tensor) for k in ("__pos__", "weight", "image"))
    assert not ds.slot_table.view().any()  # no slot taken that nothing would free


# --- on CUDA (the ``gpu`` marker; skipped without it) -------------------------------------------


def _alone_by_device(shards, epoch, device):
    """Every sample of ``epoch`` made one at a time without a loader: the CPU-augmented image,
    or (``device="gpu"``) the stored block the GPU path sends."""
    ds = open_shards(shards, augment=SPEC, augment_device=device, seed=5)
    ds.set_epoch(epoch)
    return {s["__key__"]: s["image"] for s in ds}


@pytest.mark.gpu
def test_prefetcher_on_a_cuda_side_stream_matches_the_cpu_backend(shards):
    """Batches copied and augmented on the prefetcher's side stream while the trainer's stream
    is busy (a sleep kernel queued before each batch is read) equal the CPU backend's, noise
    included, and the trainer's in-place use of one batch spoils no other."""
    cpu = _by_key(open_shards(shards, augment=SPEC, seed=1), 0, epoch=0)
    ds = open_shards(shards, augment=SPEC, augment_device="gpu", seed=1)
    loader = streamvol.loader(ds, 3, 2, pin_memory=True, persistent_workers=False)
    prefetch = DevicePrefetcher(loader, "cuda")
    assert prefetch.cuda
    got = {}
    for b in prefetch:
        assert b["image"].is_cuda and b["image"].dtype == torch.float32
        torch.cuda._sleep(2_000_000)  # the trainer's stream busy while the next batch is made
        for i, k in enumerate(b["__key__"]):
            got[k] = b["image"][i].cpu()
        b["image"].mul_(0)  # a trainer writing into its batch touches only that batch
    assert got.keys() == cpu.keys() and len(got) == 12
    for k in cpu:
        assert torch.allclose(got[k], cpu[k], atol=1e-4), k


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_pinned_batches_over_reused_slots_are_never_overwritten(shards, device):
    """pin_memory with 2 workers over two epochs, every batch kept: the pin thread copies each
    batch out of its worker's slot, which is freed at once and reused; no kept batch changes, and
    no slot stays taken or mapped."""
    ds = open_shards(shards, augment=SPEC, augment_device=device, seed=5)
    dl = streamvol.loader(ds, batch_size=2, num_workers=2, pin_memory=True)
    kept = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for b in dl:
            assert b["image"].is_pinned()
            kept.append((epoch, b))
    assert len(kept) == 12  # 12 samples, batches of 2, two epochs
    for epoch in (0, 1):
        alone = _alone_by_device(shards, epoch, device)
        batches = [b for e, b in kept if e == epoch]
        assert sorted(k for b in batches for k in b["__key__"]) == sorted(alone)
        for b in batches:
            for i, k in enumerate(b["__key__"]):
                assert torch.equal(b["image"][i], alone[k]), (epoch, k)
    table = ds.slot_table
    assert list(table.counters[:2]) == [6, 6]  # every batch came through a slot
    assert not table.view().any()  # each freed as soon as it was pinned
    assert not table.mapped  # pinned batches hold no slot's memory
    del kept, b
    gc.collect()
    assert not table.view().any()


AUGMENT_IN_A_FRESH_INTERPRETER = """
import hashlib, sys
from streamvol.augment import Augment, Flip, Noise, Rotate
from streamvol.stream import open_shards
spec = Augment(
    rotate=Rotate(mode="free"), flip=Flip(p=(0.5, 0.5, 0.5)), noise=Noise(std=(0.0, 0.2))
)
ds = open_shards(sys.argv[1], augment=spec, seed=7, shuffle=False)
ds.set_epoch(2)
for sample in ds:
    print(sample["__key__"], hashlib.sha256(sample["image"].numpy().tobytes()).hexdigest())
"""


def test_augmentation_is_the_same_in_interpreters_with_other_hash_seeds(shards):
    """Keys are hashed with blake2b, never Python's ``hash`` (salted per process)."""
    import hashlib
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(root), *sys.path])
        done = subprocess.run(
            [sys.executable, "-c", AUGMENT_IN_A_FRESH_INTERPRETER, str(shards)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 12
    ds = open_shards(shards, augment=SPEC, seed=7, shuffle=False)
    ds.set_epoch(2)
    here = "".join(
        f"{s['__key__']} {hashlib.sha256(s['image'].numpy().tobytes()).hexdigest()}\n" for s in ds
    )
    assert here == outputs[0]
