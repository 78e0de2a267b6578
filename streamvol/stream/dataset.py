"""``StreamDataset``: exact, deterministic, resumable epochs over WebDataset shards.

The pipeline is a list of small generator stages (read runs -> decode -> shuffle -> prepare),
each a function of an iterator. Everything random about a sample comes from
``(seed, epoch, key)``; shard order and the shuffle buffer from ``(seed, epoch, rank, worker)``.

State that must be seen by loader workers (the epoch, which positions of this rank's epoch were
already consumed) lives in shared memory, so persistent workers follow ``set_epoch`` and
``load_state_dict`` made in the main process.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from streamvol.core.geometry import inside
from streamvol.core.rng import sample_rng
from streamvol.errors import ShardError
from streamvol.stream import slots
from streamvol.stream.decode import check_deferred, iter_samples
from streamvol.stream.draw import DrawCrop, Window
from streamvol.stream.epoch import (
    SHUFFLE_BUFFER,
    RankPlan,
    balanced,
    loader_rng,
    next_worker,
    per_rank,
    rank_plan,
    round_robin,
    runs,
    worker_sequence,
)
from streamvol.stream.index import ShardSet, resolve
from streamvol.stream.watch import Progress

log = logging.getLogger(__name__)
STATE_VERSION = 2


# --- stages ------------------------------------------------------------------------------------


def read_runs(
    shards: ShardSet,
    plan: RankPlan,
    positions: np.ndarray,
    on_error: str,
    errors: Any,
    mark: Callable[[str, int], None] = lambda stage, shard: None,
) -> Iterator[dict[str, Any]]:
    """Read each run of positions with one seek into its shard; tag samples with position/weight.

    In a region set a run's units are crops of its regions: each region is read once per run
    and handed out with each unit (``__region__``, ``__unit__``) for ``DrawCrop``. With
    ``on_error="skip"`` the unread rest of a damaged shard comes out as placeholders
    (``{"__pos__": p, "__skipped__": True}``), so later stages know not to wait for them.
    """
    for run in runs(plan, positions):
        info = shards.shards[run.shard]
        mark("reading", run.shard)
        sent = 0
        try:
            with shards.open(info.url) as f:
                for sample in _run_samples(shards, f, run, plan, on_error):
                    if "__error__" in sample:  # one bad sample: the rest of the run reads on
                        log.warning("skipping a sample: %s", sample.pop("__error__"))
                        with errors.get_lock():
                            errors.value += 1
                    sent += 1
                    yield sample
                    mark("reading", run.shard)
        except (ShardError, OSError) as exc:
            if on_error != "skip":
                raise
            log.warning("skipping the rest of %s: %s", info.url, exc)
            with errors.get_lock():
                errors.value += 1
        for pos in run.positions[sent:]:
            yield {"__pos__": int(pos), "__skipped__": True}


def _run_samples(
    shards: ShardSet, f: Any, run: Any, plan: RankPlan, on_error: str
) -> Iterator[dict[str, Any]]:
    """The samples of one run of an open shard, tagged with their position and weight, each
    checked against the manifest (keys, member checksums); with ``on_error="skip"`` a bad one
    comes out as a placeholder holding its ``__error__``."""
    info = shards.shards[run.shard]
    bad = "yield" if on_error == "skip" else "raise"
    if info.units is None:
        f.seek(info.offsets[run.start])
        expect = shards.expected(run.shard, run.start, run.count)
        # the block's checksum waits for the loop, where it brings the block into the caches
        stream = iter_samples(f, info.url, expect=expect, bad=bad, defer=("image.npy",))
        for sample, pos in zip(stream, run.positions, strict=False):
            if "__error__" in sample:
                yield {"__pos__": int(pos), "__skipped__": True, "__error__": sample["__error__"]}
                continue
            sample["__pos__"] = int(pos)
            sample["weight"] = float(plan.weight[pos])
            yield sample
        return
    first = np.concatenate([[0], np.cumsum(info.units)])
    units = run.start + np.arange(run.count)
    regions = np.searchsorted(first, units, side="right") - 1
    for r in np.unique(regions).tolist():
        f.seek(info.offsets[r])
        expect = shards.expected(run.shard, r, 1)
        region = next(iter_samples(f, info.url, expect=expect, bad=bad))
        for u, pos in zip(units[regions == r], run.positions[regions == r], strict=True):
            if "__error__" in region:
                yield {"__pos__": int(pos), "__skipped__": True, "__error__": region["__error__"]}
                continue
            j = int(u - first[r])
            yield {
                "__key__": f"{region['__key__']}_u{j}",
                "__region__": region,
                "__unit__": j,
                "__pos__": int(pos),
                "weight": float(plan.weight[pos]),
            }


def timed(samples: Iterable[dict[str, Any]], clock: list[float]) -> Iterator[dict[str, Any]]:
    """Add the seconds spent reading and decoding to ``clock[0]`` (for ``streamvol bench``)."""
    it = iter(samples)
    while True:
        started = time.perf_counter()
        try:
            sample = next(it)
        except StopIteration:
            return
        finally:
            clock[0] += time.perf_counter() - started
        yield sample


def reorder(samples: Iterable[dict[str, Any]], order: np.ndarray) -> Iterator[dict[str, Any]]:
    """Emit the samples (read in position order) in ``order``: a shuffle buffer whose draws
    were made beforehand (``epoch.emission``), so it holds no more samples than one would."""
    held: dict[int, dict[str, Any]] = {}
    it = iter(samples)
    for pos in order.tolist():
        while pos not in held:
            sample = next(it, None)
            if sample is None:
                break
            held[sample["__pos__"]] = sample
        sample = held.pop(pos, None)
        if sample is not None:
            yield sample


@dataclass(frozen=True)
class Prepare:
    """Turn a decoded stored sample into a training sample (picklable stage settings).

    Without augmentation the stored block is centre-cropped to the crop size; with CPU
    augmentation one fused pass resamples, normalises and adds noise; with GPU augmentation the
    stored block is kept and its parameters travel with it to ``DevicePrefetcher``.
    """

    crop: tuple[int, int, int] | None
    offset: float = 0.0
    scale: float = 1.0
    augment: Any = None
    augment_device: str = "cpu"
    seed: int = 0
    decode_only: bool = False

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        """The image shape this stage returns when it writes the output itself (CPU
        augmentation with a crop size), else None."""
        if self.augment is None or self.augment_device != "cpu" or self.decode_only:
            return None
        return None if self.crop is None else (1, *self.crop)

    def __call__(
        self, sample: dict[str, Any], epoch: int, into: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """The training sample; with ``into`` (a float32 tensor of ``out_shape``) the augmented
        image is written there, e.g. into its slot of the batch being assembled. A region set's
        image and mask come as ``Window``s, cut here: the CPU augmentation cuts only what its
        drawn geometry reads."""
        image = sample["image.npy"]
        mask = sample.get("mask.npy")
        points = sample.get("points.npy")
        out: dict[str, Any] = {
            "__key__": sample["__key__"],
            "__pos__": sample["__pos__"],
            "weight": sample["weight"],
        }
        if "cls" in sample:
            out["label"] = sample["cls"]
        cpu_augment = self.augment is not None and self.augment_device == "cpu"
        if isinstance(image, Window) and not (cpu_augment and not self.decode_only):
            image, mask = image.cut(), None if mask is None else mask.cut()
        if not isinstance(image, Window) and image.ndim == 3:
            image = image[None]
        if self.decode_only or (self.augment is not None and self.augment_device == "gpu"):
            out["image"] = torch.from_numpy(np.ascontiguousarray(image))
            if mask is not None:
                out["mask"] = torch.from_numpy(mask.astype(np.int64))
            if points is not None:
                out["points"] = torch.from_numpy(points)
            if self.augment is not None and not self.decode_only:
                rng = sample_rng(self.seed, epoch, sample["__key__"])
                out["params"] = self.augment.sample(rng, image.shape[1:], self.crop)
            return out
        if self.augment is not None:
            from streamvol.augment import apply_cpu

            rng = sample_rng(self.seed, epoch, sample["__key__"])
            params = self.augment.sample(rng, image.shape[-3:], self.crop)
            windowed = isinstance(image, Window)
            if windowed:  # cut only what this draw reads, and read it from there
                start, stop = params.reads()
                image = image.cut(start, stop)
                mask = None if mask is None else mask.cut(start, stop)
                if points is not None:
                    points = points - np.array([*start, 0], np.float32)
                params = params.within(start, stop)
            done = apply_cpu(
                {"image": image, "mask": mask, "points": points},
                params,
                offset=self.offset,
                scale=self.scale,
                out=None if into is None else into.numpy(),
                # a stored block comes from the page cache, not the CPU's caches, unless its
                # checksum has just read it through
                prefetch=not windowed and not sample.get("__warm__"),
            )
            out["image"] = torch.from_numpy(done["image"]) if into is None else into
            if done.get("mask") is not None:
                out["mask"] = torch.from_numpy(done["mask"])
            if done.get("points") is not None:
                out["points"] = torch.from_numpy(done["points"])
            return out
        block = _centre(image, self.crop)
        out["image"] = torch.from_numpy((block.astype(np.float32) - self.offset) * self.scale)
        if mask is not None:
            out["mask"] = torch.from_numpy(_centre(mask[None], self.crop)[0].astype(np.int64))
        if points is not None:
            out["points"] = torch.from_numpy(_shift_points(points, image.shape[1:], self.crop))
        return out


def batch_buffer(n: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty (n, *shape) tensor, in shared memory inside a loader worker (one of the worker's
    reused ``slots``): it then reaches the main process uncopied."""
    if get_worker_info() is None:
        return torch.empty((n, *shape), dtype=dtype)
    return slots.buffer(n, shape, dtype)


def _centre(block: np.ndarray, crop: Sequence[int] | None) -> np.ndarray:
    """The central ``crop`` of a (C, D, H, W) block: the stored block without its margin."""
    if crop is None:
        return block
    starts = [(n - c) // 2 for n, c in zip(block.shape[1:], crop, strict=True)]
    return block[(slice(None), *(slice(s, s + c) for s, c in zip(starts, crop, strict=True)))]


def _shift_points(
    points: np.ndarray, stored: Sequence[int], crop: Sequence[int] | None
) -> np.ndarray:
    if crop is None:
        return points
    starts = np.array([(n - c) // 2 for n, c in zip(stored, crop, strict=True)], np.float32)
    moved = points.copy()
    moved[:, :3] -= starts
    return moved[inside(moved, (0, 0, 0), crop)]


# --- shared state ------------------------------------------------------------------------------


class _Shared:
    """Epoch, consumed positions, delivered batches and error count, in memory that loader
    workers share.

    ``consumed`` changes as batches are delivered; ``at_start`` is its copy taken when a pass
    begins, which every worker skips, so workers that start late still agree. ``made_by`` is
    the (workers, batch size) every batch of this epoch so far was made with ((0, 0) before the
    first, (-1, -1) once they differed), ``delivered`` how many batches that was, and
    ``rotation`` the worker that makes the first batch of the current pass.
    """

    def __init__(self, size: int) -> None:
        self.epoch = multiprocessing.Value("q", 0)
        self.consumed = multiprocessing.RawArray("B", max(size, 1))
        self.at_start = multiprocessing.RawArray("B", max(size, 1))
        self.errors = multiprocessing.Value("q", 0)
        self.delivered = multiprocessing.RawValue("q", 0)
        self.made_by = multiprocessing.RawArray("q", 2)
        self.rotation = multiprocessing.RawValue("q", 0)
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
            raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} and world size {world_size}: expected 0 <= rank < world size"
            )
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
        # set by the loader: with CPU augmentation, images are written straight into batches of
        # this many (``batch_buffer``), which ``collate`` recognises and passes on uncopied
        self.batch_size: int | None = None
        self._driven = False  # a StreamLoader runs this pass (it began it)

    @property
    def slot_table(self) -> slots.SlotTable:
        """Which of the workers' batch segments are in use (see ``streamvol.stream.slots``)."""
        return self._shared.slots

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
            raise ValueError(
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
                raise ValueError(
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
            raise ValueError(
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
        info = get_worker_info()
        in_main = info is None
        if in_main and not self._driven:
            self.begin_pass()
        workers = 1 if in_main else info.num_workers
        seat = 0 if in_main else info.id  # the DataLoader's worker id
        worker = (seat + int(self._shared.rotation.value)) % workers  # whose sequence it makes
        epoch = self.epoch
        plan = self.plan(epoch)
        order = self.sequence(worker, workers, epoch)
        order = order[self._shared.view("at_start")[order] == 0]
        progress = self._shared.progress

        def mark(stage: str, shard: int = -1) -> None:
            progress.mark(seat, stage, shard)

        clock = [0.0]  # read + decode seconds so far (each sample carries its own share)
        errors = self._shared.errors
        reads = read_runs(self.shards, plan, np.sort(order), self.on_error, errors, mark)
        stream = reorder(timed(reads, clock), order)
        consumed = self._shared.view()
        read_so_far = 0.0
        shape, batch = self.prepare.out_shape, None
        arena = shape is not None and self.batch_size is not None
        made = 0
        for sample in stream:
            if sample.get("__skipped__"):  # unreadable (on_error="skip"): done for this epoch
                consumed[sample["__pos__"]] = 1
                continue
            mark("preparing")
            started = time.perf_counter()
            if "__unchecked__" in sample:  # reading the block for its checksum warms the caches
                try:
                    check_deferred(sample)
                except ShardError as exc:
                    if self.on_error != "skip":
                        raise
                    log.warning("skipping a sample: %s", exc)
                    with errors.get_lock():
                        errors.value += 1
                    consumed[sample["__pos__"]] = 1
                    continue
                sample["__warm__"] = True
            if self.draw is not None:  # a unit of a region set: its crop, drawn for this epoch
                sample = self.draw(sample, epoch)
            if arena:  # each batch's images written in place: collate then copies nothing
                slot = made % self.batch_size
                if slot == 0:
                    batch = batch_buffer(self.batch_size, shape, torch.float32)
                out = self.prepare(sample, epoch, into=batch[slot])
            else:
                out = self.prepare(sample, epoch)
            made += 1
            out["__t_prep__"] = time.perf_counter() - started
            out["__t_read__"], read_so_far = clock[0] - read_so_far, clock[0]
            out["__epoch__"] = epoch
            if in_main:
                consumed[out["__pos__"]] = 1
            yield out


def _distributed() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def open_shards(
    source: str | Sequence[str],
    *,
    split: str = "train",
    folds: Sequence[int] | None = None,
    augment: Any = None,
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
    ``errors``). ``verify=False`` skips the member checksums.
    """
    if augment_device not in ("cpu", "gpu"):
        raise ValueError(f"augment_device={augment_device!r}: expected 'cpu' or 'gpu'")
    shards = resolve(source, split=split, folds=folds, storage=storage_options, verify=verify)
    dist = _distributed()
    if dist is not None and rank is None and world_size is None:
        rank, world_size = dist
    manifest = shards.manifest or {}
    offset, scale = 0.0, 1.0
    if normalize is True and "stats" in manifest:
        offset, scale = manifest["stats"]["mean"], 1.0 / max(manifest["stats"]["std"], 1e-12)
    elif isinstance(normalize, tuple):
        offset, scale = normalize[0], 1.0 / normalize[1]
    crop = tuple(manifest["crop"]) if "crop" in manifest else None
    if augment is not None and crop is None:
        raise ShardError("augmentation needs the crop size from the shard set's manifest.json")
    need = augment.margin_shortfall(crop, manifest["margin"]) if augment is not None else None
    draw = _region_draw(manifest, augment, seed)
    if draw is not None and not manifest["plan"]["tiled"]:
        need = None  # whole volumes: any augmentation reads inside them or in the padding
    if need:
        raise ShardError(
            f"{source}: shards keep a margin of {manifest['margin']} voxels but the augmentation "
            f"needs {list(need)}; reshard with --context auto for it, or augment less"
        )
    prepare = Prepare(
        crop=crop,  # type: ignore[arg-type]
        offset=offset,
        scale=scale,
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
