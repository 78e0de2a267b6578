"""``StreamDataset``: exact, deterministic, resumable epochs over WebDataset shards.

An epoch is a pipeline of generator stages (``streamvol.stream.stages``: read -> time ->
reorder -> check -> prepare -> tag), composed in ``__iter__``. Everything random about a sample
comes from ``(seed, epoch, key)``; shard order and the shuffle buffer from
``(seed, epoch, rank, worker)``.

State that must be seen by loader workers (the epoch, which positions of this rank's epoch were
already consumed) lives in shared memory, so persistent workers follow ``set_epoch`` and
``load_state_dict`` made in the main process.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from streamvol.errors import BadInput, BadOption, ShardError
from streamvol.stream import slots
from streamvol.stream.draw import DrawCrop
from streamvol.stream.epoch import (
    SHUFFLE_BUFFER,
    RankPlan,
    balanced,
    loader_rng,
    next_worker,
    per_rank,
    rank_plan,
    round_robin,
    worker_sequence,
)
from streamvol.stream.index import ShardSet, resolve
from streamvol.stream.prepare import Normalize, Prepare, make_prepare
from streamvol.stream.stages import PassInfo, checked, prepared, read_runs, reorder, tagged, timed
from streamvol.stream.watch import Progress

STATE_VERSION = 2


# --- shared state ------------------------------------------------------------------------------


class _Shared:
    """Epoch, consumed positions, delivered batches and error count, in memory that loader
    workers share.

    ``consumed`` changes as batches are delivered; ``at_start`` is its copy taken when a pass
    begins, which every worker skips, so workers that start late still agree. ``made_by`` is
    the (workers, batch size) every batch of this epoch so far was made with ((0, 0) before the
    first, (-1, -1) once they differed), ``delivered`` how many batches that was, and
    ``rotation`` the worker that makes the first batch of the current pass, and
    ``batch_size`` its loader's batch size (workers write images straight into batches of it).
    """

    def __init__(self, size: int) -> None:
        self.epoch = multiprocessing.Value("q", 0)
        self.consumed = multiprocessing.RawArray("B", max(size, 1))
        self.at_start = multiprocessing.RawArray("B", max(size, 1))
        self.errors = multiprocessing.Value("q", 0)
        self.delivered = multiprocessing.RawValue("q", 0)
        self.made_by = multiprocessing.RawArray("q", 2)
        self.rotation = multiprocessing.RawValue("q", 0)
        self.batch_size = multiprocessing.RawValue("q", 0)  # of the current loader pass, or 0
        self.slots = slots.SlotTable()
        self.progress = Progress()
        self.size = size

    def view(self, name: str = "consumed") -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=np.uint8)[: self.size]

    def snapshot(self) -> None:
        self.view("at_start")[:] = self.view()


# --- the dataset -------------------------------------------------------------------------------


class StreamDataset(IterableDataset):
    """Samples of a shard set for one rank; see ``open_shards``.

    The order of an epoch is a pure function of (shard counts, seed, epoch, rank, workers,
    batch size): each worker emits a fixed sequence of positions (``sequence``), batches are
    consecutive runs of it, and the loader takes one batch from each worker in turn. A resumed
    epoch skips what was consumed and, with the same workers and batch size, starts with the
    worker whose batch was next, so it makes exactly the batches the whole epoch would have.
    """

    def __init__(
        self,
        shards: ShardSet,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        prepare: Prepare,
        on_error: str = "raise",
        shuffle_buffer: int = 256,
        name: str = "shards",
        draw: DrawCrop | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise BadOption("on_error", on_error, "expected 'raise' or 'skip'")
        if world_size < 1 or not 0 <= rank < world_size:
            raise BadOption("rank", rank, f"expected 0 <= rank < world_size={world_size}")
        self.shards = shards
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.prepare = prepare
        self.on_error = on_error
        self.shuffle_buffer = shuffle_buffer
        self.name = name
        self.draw = draw
        self.counts = [s.count for s in shards.shards]
        self._shared = _Shared(per_rank(sum(self.counts), world_size))
        self._driven = False  # a StreamLoader runs this pass (it began it)

    @property
    def slot_table(self) -> slots.SlotTable:
        """Which of the workers' batch segments are in use (see ``streamvol.stream.slots``)."""
        return self._shared.slots

    @property
    def normalize(self) -> Normalize:
        """How images are normalised (``DevicePrefetcher`` normalises GPU-augmented batches
        with it)."""
        return self.prepare.normalize

    @property
    def progress(self) -> Progress:
        """Where each loader worker is (see ``streamvol.stream.watch``)."""
        return self._shared.progress

    # epochs and resume

    @property
    def epoch(self) -> int:
        return int(self._shared.epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a different epoch than the current one forgets what was consumed."""
        if epoch != self.epoch:
            self._shared.view()[:] = 0
            self._shared.epoch.value = epoch
            self._shared.delivered.value = 0
            self._shared.made_by[:] = [0, 0]
            self._shared.snapshot()

    def __len__(self) -> int:
        """Samples this rank yields in a full epoch, padding included (the same on every rank)."""
        return self._shared.size

    @property
    def remaining(self) -> np.ndarray:
        """Positions of this rank's epoch not consumed yet."""
        return np.flatnonzero(self._shared.view() == 0)

    @property
    def errors(self) -> int:
        """Shard read errors skipped with ``on_error='skip'``."""
        return int(self._shared.errors.value)

    def mark_consumed(self, positions: Iterable[int]) -> None:
        """Record delivered samples (the loader calls this as batches reach the trainer)."""
        self._shared.view()[np.asarray(list(positions), dtype=np.int64)] = 1

    @property
    def delivered(self) -> int:
        """Batches delivered in this epoch so far."""
        return int(self._shared.delivered.value)

    def mark_delivered(self, batches: int = 1) -> None:
        """Count batches delivered in this epoch (the loader calls this)."""
        self._shared.delivered.value += batches

    def begin_pass(self, num_workers: int = 0, batch_size: int | None = None) -> None:
        """Called in the main process before a pass: a fully consumed epoch moves on to the
        next one, and the workers skip what is consumed now. With a ``batch_size`` (a loader's
        pass), the pass continues the epoch's batches where they stopped when they were made
        with the same workers and batch size."""
        if self._shared.size and not len(self.remaining):
            self.set_epoch(self.epoch + 1)
        self._shared.snapshot()
        self._shared.rotation.value = 0
        self._shared.batch_size.value = batch_size or 0
        if batch_size is None:
            return
        workers = max(num_workers, 1)
        made_by = tuple(self._shared.made_by)
        if made_by == (0, 0) and not self._shared.view().any():
            self._shared.made_by[:] = [workers, batch_size]
        elif made_by == (workers, batch_size):
            delivered = int(self._shared.delivered.value)
            batches = self.worker_batches(workers, batch_size)
            self._shared.rotation.value = next_worker(batches, delivered)
        else:  # exactly once still holds; the batches are made afresh from here
            self._shared.made_by[:] = [-1, -1]

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands in its epoch; loads with ``torch.load(weights_only=True)``."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "total": sum(self.counts),
            "shards": self.fingerprint,
            "consumed": torch.from_numpy(np.packbits(self._shared.view())),
            "delivered": int(self._shared.delivered.value),
            "made_by": [int(v) for v in self._shared.made_by],
        }

    @property
    def fingerprint(self) -> str:
        """A short digest of the shard set's keys, so a state of another set is refused."""
        digest = hashlib.blake2b(digest_size=8)
        for info in self.shards.shards:
            digest.update("\n".join(info.keys).encode())
        return digest.hexdigest()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stopped: the rest of its epoch, then normally.

        A state saved by another rank (under ``torch.distributed`` only rank 0 saves) applies
        when its batches were made with known workers and batch size: this rank's consumed
        samples are then the ones its first ``delivered`` batches held.
        """
        if state.get("version") != STATE_VERSION:
            raise BadInput(
                f"state_dict version {state.get('version')!r}: expected {STATE_VERSION}; "
                "it was saved by another streamvol version"
            )
        expected = {
            "world_size": self.world_size,
            "total": sum(self.counts),
            "seed": self.seed,
            "shards": self.fingerprint,
        }
        for name, value in expected.items():
            if state.get(name) != value:
                raise BadInput(
                    f"state_dict {name}={state.get(name)!r} does not match this dataset's "
                    f"{value!r}; resume with the same shards, seed and world size"
                )
        made_by = tuple(int(v) for v in state["made_by"])
        delivered = int(state["delivered"])
        self._shared.epoch.value = int(state["epoch"])
        if state.get("rank") == self.rank:
            bits = np.unpackbits(np.asarray(state["consumed"], dtype=np.uint8))
            consumed = bits[: self._shared.size]
        elif made_by[0] > 0:
            consumed = self.consumed_after(delivered, *made_by)
        else:
            raise BadInput(
                f"state_dict of rank {state.get('rank')} cannot resume rank {self.rank}: its "
                "batches were not all made with one number of workers and batch size"
            )
        self._shared.view()[:] = consumed
        self._shared.delivered.value = delivered
        self._shared.made_by[:] = list(made_by)
        self._shared.snapshot()

    # the order of an epoch

    def plan(self, epoch: int | None = None) -> RankPlan:
        """This rank's samples in ``epoch`` (default: the current one)."""
        return rank_plan(
            self.counts,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
        )

    def sequence(self, worker: int, num_workers: int, epoch: int | None = None) -> np.ndarray:
        """The positions worker ``worker`` of ``num_workers`` emits in a full ``epoch``."""
        epoch = self.epoch if epoch is None else epoch
        rng = None
        if self.shuffle and self.shuffle_buffer > 1:
            rng = loader_rng(self.seed, epoch, SHUFFLE_BUFFER, self.rank, worker)
        return worker_sequence(
            self._shared.size, worker, num_workers, bufsize=self.shuffle_buffer, rng=rng
        )

    def worker_batches(self, num_workers: int, batch_size: int) -> list[int]:
        """Batches each worker makes in a full epoch."""
        sizes = [balanced(self._shared.size, num_workers, w) for w in range(num_workers)]
        return [-(-(s.stop - s.start) // batch_size) for s in sizes]

    def remaining_batches(self, num_workers: int, batch_size: int) -> int:
        """Batches a pass over what is not consumed yet makes with these workers."""
        left = self._shared.view() == 0
        sizes = [balanced(self._shared.size, num_workers, w) for w in range(num_workers)]
        return sum(-(-int(left[s].sum()) // batch_size) for s in sizes)

    def consumed_after(self, delivered: int, num_workers: int, batch_size: int) -> np.ndarray:
        """Which positions the first ``delivered`` batches of the current epoch held."""
        consumed = np.zeros(self._shared.size, np.uint8)
        sequences = [self.sequence(w, num_workers) for w in range(num_workers)]
        batches = [-(-len(s) // batch_size) for s in sequences]
        for w, k in round_robin(batches)[:delivered]:
            consumed[sequences[w][k * batch_size : (k + 1) * batch_size]] = 1
        return consumed

    # iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker_info = get_worker_info()
        in_main = worker_info is None
        if in_main and not self._driven:
            self.begin_pass()
        workers = 1 if in_main else worker_info.num_workers
        seat = 0 if in_main else worker_info.id  # the DataLoader's worker id
        worker = (seat + int(self._shared.rotation.value)) % workers  # whose sequence it makes
        epoch = self.epoch
        plan = self.plan(epoch)
        order = self.sequence(worker, workers, epoch)
        order = order[self._shared.view("at_start")[order] == 0]
        progress = self._shared.progress

        def mark(stage: str, shard: int = -1) -> None:
            progress.mark(seat, stage, shard)

        info = PassInfo(
            epoch, seat, self.on_error, self._shared.errors, self._shared.view(), in_main, mark
        )
        batch_size = int(self._shared.batch_size.value) or None
        stream = read_runs(self.shards, plan, np.sort(order), info)
        stream = timed(stream, info)
        stream = reorder(stream, order)
        stream = checked(stream, info)
        stream = prepared(stream, info, self.prepare, self.draw, batch_size)
        yield from tagged(stream, info)


def _distributed() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def open_shards(
    source: str | Sequence[str],
    *,
    split: str = "train",
    folds: Sequence[int] | None = None,
    augment: Any | str | None = None,
    augment_device: str = "cpu",
    seed: int = 0,
    shuffle: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    decode_only: bool = False,
    normalize: bool | tuple[float, float] = True,
    on_error: str = "raise",
    shuffle_buffer: int = 256,
    storage_options: dict[str, Any] | None = None,
    verify: bool = True,
) -> StreamDataset:
    """Open a shard set for streaming: a folder (its manifest), tar paths, a brace pattern or URLs.

    Yields dicts with ``__key__``, ``image`` (float32, 1 x D x H x W, normalised by the
    manifest's mean and std unless ``normalize`` says otherwise), ``label``, ``mask``, ``points``
    (as present) and ``weight`` (0 for padding). Rank and world size come from
    ``torch.distributed`` when it is initialised, else from the arguments. ``storage_options``
    go to fsspec (for example ``{"client_kwargs": {"endpoint_url": ...}}`` for ``s3://``).
    Every member is checked against the checksum the manifest recorded for it, every sample's
    key and each tar's sample count against the manifest's; a mismatch raises ``ShardError``
    naming the shard and key (``on_error="skip"``: the sample is skipped and counted in
    ``errors``). ``verify=False`` skips the member checksums. ``augment``: an ``Augment``, or
    what ``--augment`` takes (a preset name, ``default``, ``cryoet``, ..., or a TOML/YAML file).
    """
    if isinstance(augment, (str, os.PathLike)):
        from streamvol.augment import load_spec

        augment = load_spec(augment)
    if augment is not None and not hasattr(augment, "on_voxels"):
        raise BadOption(
            "augment", augment, "expected an Augment, a preset name or a .toml/.yaml spec file"
        )
    if augment_device not in ("cpu", "gpu"):
        raise BadOption("augment_device", augment_device, "expected 'cpu' or 'gpu'")
    shards = resolve(source, split=split, folds=folds, storage=storage_options, verify=verify)
    dist = _distributed()
    if dist is not None and rank is None and world_size is None:
        rank, world_size = dist
    manifest = shards.manifest or {}
    crop = tuple(manifest["crop"]) if "crop" in manifest else None
    if augment is not None and crop is None:
        raise ShardError("augmentation needs the crop size from the shard set's manifest.json")
    if augment is not None:  # rotations turn the set's physical space
        augment = augment.on_voxels(manifest.get("voxel_size"))
    need = augment.margin_shortfall(crop, manifest["margin"]) if augment is not None else None
    draw = _region_draw(manifest, augment, seed)
    if draw is not None and not manifest["plan"]["tiled"]:
        need = None  # whole volumes: any augmentation reads inside them or in the padding
    if need:
        raise ShardError(
            f"{source}: shards keep a margin of {manifest['margin']} voxels but the augmentation "
            f"needs {list(need)}; reshard with --context auto for it, or augment less"
        )
    prepare = make_prepare(
        crop,  # type: ignore[arg-type]
        Normalize.of(manifest, normalize),
        augment=augment,
        augment_device=augment_device,
        seed=seed,
        decode_only=decode_only,
    )
    return StreamDataset(
        shards,
        seed=seed,
        shuffle=shuffle,
        rank=rank or 0,
        world_size=world_size or 1,
        prepare=prepare,
        on_error=on_error,
        shuffle_buffer=shuffle_buffer,
        name=_describe(source, split, folds),
        draw=draw,
    )


def _region_draw(manifest: dict[str, Any], augment: Any, seed: int) -> DrawCrop | None:
    """The stage that draws a region set's crops (None for other shard sets)."""
    plan = manifest.get("plan") or {}
    if plan.get("kind") != "regions":
        return None
    crop = tuple(manifest["crop"])
    margin = tuple(augment.margin(crop)) if augment is not None else (0, 0, 0)
    radii = manifest.get("radii_voxels") or {}
    return DrawCrop(
        crop=crop,  # type: ignore[arg-type]
        margin=margin,  # type: ignore[arg-type]
        pad=manifest.get("pad", "reflect"),
        max_shift=int(plan.get("max_shift", 0)),
        radii=tuple(float(radii.get(name, 0.0)) for name in manifest.get("class_names", [])),
        seed=seed,
    )


def _describe(source: str | Sequence[str], split: str, folds: Sequence[int] | None) -> str:
    """How errors name a shard set: its folder or first URL and the split or folds read."""
    if isinstance(source, str | os.PathLike):
        where = str(source)
    else:
        where = f"{source[0]} (+{len(source) - 1} more)" if len(source) > 1 else str(source[0])
    what = f"folds {', '.join(map(str, folds))}" if folds is not None else f"split {split!r}"
    return f"{where}, {what}"
