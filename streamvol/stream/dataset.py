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
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from streamvol.errors import ShardError
from streamvol.stream import slots
from streamvol.stream.decode import iter_samples
from streamvol.stream.epoch import (
    SHUFFLE_BUFFER,
    RankPlan,
    loader_rng,
    per_rank,
    rank_plan,
    runs,
    worker_positions,
)
from streamvol.stream.index import ShardSet, resolve

log = logging.getLogger(__name__)
STATE_VERSION = 1


def key_hash(key: str) -> int:
    """A stable 64-bit hash of a sample key (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator every random draw of one sample in one epoch comes from."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, key_hash(key)]))


# --- stages ------------------------------------------------------------------------------------


def read_runs(
    shards: ShardSet, plan: RankPlan, positions: np.ndarray, on_error: str, errors: Any
) -> Iterator[dict[str, Any]]:
    """Read each run of positions with one seek into its shard; tag samples with position/weight."""
    for run in runs(plan, positions):
        info = shards.shards[run.shard]
        try:
            with shards.open(info.url) as f:
                f.seek(info.offsets[run.start])
                stream = iter_samples(f, info.url, limit=run.count, first_key=info.keys[run.start])
                for sample, pos in zip(stream, run.positions, strict=False):
                    sample["__pos__"] = int(pos)
                    sample["weight"] = float(plan.weight[pos])
                    yield sample
        except (ShardError, OSError) as exc:
            if on_error != "skip":
                raise
            log.warning("skipping the rest of %s: %s", info.url, exc)
            with errors.get_lock():
                errors.value += 1


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


def shuffle(
    samples: Iterable[dict[str, Any]], bufsize: int, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """A shuffle buffer: yield a random element of the last ``bufsize`` read."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= bufsize:
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    order = rng.permutation(len(buffer))
    for i in order:
        yield buffer[i]


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
        image is written there, e.g. into its slot of the batch being assembled."""
        image = sample["image.npy"]
        if image.ndim == 3:
            image = image[None]
        out: dict[str, Any] = {
            "__key__": sample["__key__"],
            "__pos__": sample["__pos__"],
            "weight": sample["weight"],
        }
        if "cls" in sample:
            out["label"] = sample["cls"]
        mask = sample.get("mask.npy")
        points = sample.get("points.npy")
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
            params = self.augment.sample(rng, image.shape[1:], self.crop)
            done = apply_cpu(
                {"image": image, "mask": mask, "points": points},
                params,
                offset=self.offset,
                scale=self.scale,
                out=None if into is None else into.numpy(),
                prefetch=True,  # the block comes from the page cache, not the CPU's caches
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
    inside = np.all((moved[:, :3] >= -0.5) & (moved[:, :3] < np.array(crop) - 0.5), axis=1)
    return moved[inside]


# --- shared state ------------------------------------------------------------------------------


class _Shared:
    """Epoch, consumed positions and error count, in memory that loader workers share.

    ``consumed`` changes as batches are delivered; ``at_start`` is its copy taken when a pass
    begins, from which every worker computes its share, so workers that start late still agree.
    """

    def __init__(self, size: int) -> None:
        self.epoch = multiprocessing.Value("q", 0)
        self.consumed = multiprocessing.RawArray("B", max(size, 1))
        self.at_start = multiprocessing.RawArray("B", max(size, 1))
        self.errors = multiprocessing.Value("q", 0)
        self.slots = slots.SlotTable()
        self.size = size

    def view(self, name: str = "consumed") -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=np.uint8)[: self.size]

    def snapshot(self) -> None:
        self.view("at_start")[:] = self.view()


# --- the dataset -------------------------------------------------------------------------------


class StreamDataset(IterableDataset):
    """Samples of a shard set for one rank; see ``open_shards``."""

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
        self.counts = [s.count for s in shards.shards]
        self._shared = _Shared(per_rank(sum(self.counts), world_size))
        # set by the loader: with CPU augmentation, images are written straight into batches of
        # this many (``batch_buffer``), which ``collate`` recognises and passes on uncopied
        self.batch_size: int | None = None

    @property
    def slot_table(self) -> slots.SlotTable:
        """Which of the workers' batch segments are in use (see ``streamvol.stream.slots``)."""
        return self._shared.slots

    # epochs and resume

    @property
    def epoch(self) -> int:
        return int(self._shared.epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a different epoch than the current one forgets what was consumed."""
        if epoch != self.epoch:
            self._shared.view()[:] = 0
            self._shared.epoch.value = epoch
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

    def begin_pass(self) -> None:
        """Called in the main process before a pass: a fully consumed epoch moves on to the
        next one, and the workers' shares are fixed from what is consumed now."""
        if self._shared.size and not len(self.remaining):
            self.set_epoch(self.epoch + 1)
        self._shared.snapshot()

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands in its epoch; loads with ``torch.load(weights_only=True)``."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "total": sum(self.counts),
            "consumed": torch.from_numpy(np.packbits(self._shared.view())),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stopped: the rest of its epoch, then normally."""
        expected = {"world_size": self.world_size, "total": sum(self.counts), "seed": self.seed}
        for name, value in expected.items():
            if state.get(name) != value:
                raise ValueError(
                    f"state_dict {name}={state.get(name)!r} does not match this dataset's "
                    f"{value!r}; resume with the same shards, seed and world size"
                )
        bits = np.unpackbits(np.asarray(state["consumed"], dtype=np.uint8))[: self._shared.size]
        self._shared.epoch.value = int(state["epoch"])
        self._shared.view()[:] = bits
        self._shared.snapshot()

    # iteration

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

    def worker_share(self, worker: int, num_workers: int) -> np.ndarray:
        """The positions one worker reads in this pass: what remained as it began, split evenly."""
        return worker_positions(
            np.flatnonzero(self._shared.view("at_start") == 0), worker, num_workers
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        in_main = info is None
        if in_main:
            self.begin_pass()
        worker, workers = (0, 1) if in_main else (info.id, info.num_workers)
        epoch = self.epoch
        plan = self.plan(epoch)
        mine = self.worker_share(worker, workers)
        clock = [0.0]  # read + decode seconds so far (each sample carries its own share)
        stream: Iterator[dict[str, Any]] = timed(
            read_runs(self.shards, plan, mine, self.on_error, self._shared.errors), clock
        )
        if self.shuffle and self.shuffle_buffer > 1:
            rng = loader_rng(self.seed, epoch, SHUFFLE_BUFFER, self.rank, worker)
            stream = shuffle(stream, self.shuffle_buffer, rng)
        consumed = self._shared.view()
        read_so_far = 0.0
        shape, batch = self.prepare.out_shape, None
        arena = shape is not None and self.batch_size is not None
        for i, sample in enumerate(stream):
            started = time.perf_counter()
            if arena:  # each batch's images written in place: collate then copies nothing
                slot = i % self.batch_size
                if slot == 0:
                    batch = batch_buffer(self.batch_size, shape, torch.float32)
                out = self.prepare(sample, epoch, into=batch[slot])
            else:
                out = self.prepare(sample, epoch)
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
) -> StreamDataset:
    """Open a shard set for streaming: a folder (its manifest), tar paths, a brace pattern or URLs.

    Yields dicts with ``__key__``, ``image`` (float32, 1 x D x H x W, normalised by the
    manifest's mean and std unless ``normalize`` says otherwise), ``label``, ``mask``, ``points``
    (as present) and ``weight`` (0 for padding). Rank and world size come from
    ``torch.distributed`` when it is initialised, else from the arguments. ``storage_options``
    go to fsspec (for example ``{"client_kwargs": {"endpoint_url": ...}}`` for ``s3://``).
    """
    if augment_device not in ("cpu", "gpu"):
        raise ValueError(f"augment_device={augment_device!r}: expected 'cpu' or 'gpu'")
    shards = resolve(source, split=split, folds=folds, storage=storage_options)
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
    )
