"""The loader's stages: each a generator over the one before, in the order
``StreamDataset.__iter__`` composes them (read -> time -> reorder -> check -> prepare -> tag).

``read_runs`` reads a worker's positions in file order (one seek per run of a shard, each region
of a region set once per run); ``reorder`` emits them in the epoch's order (a shuffle buffer
whose draws were made beforehand); ``checked`` drops unreadable samples and checks the stored
block's checksum; ``prepared`` draws region crops and prepares each sample, writing batch slots
in place; ``tagged`` adds the epoch and stage times, and in the main process marks consumption.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamvol.errors import ShardError
from streamvol.stream import slots
from streamvol.stream.decode import check_deferred, iter_samples
from streamvol.stream.epoch import RankPlan, runs
from streamvol.stream.index import ShardSet

log = logging.getLogger("streamvol.stream")

Samples = Iterator[dict[str, Any]]


@dataclass
class PassInfo:
    """What the stages of one pass share: its epoch, the worker's seat (the DataLoader's
    worker id) and progress mark, the on-error policy and counters, and the clocks."""

    epoch: int
    seat: int
    on_error: str
    errors: Any  # a shared counter of skipped samples
    consumed: np.ndarray  # the rank's consumed flags (shared memory)
    in_main: bool
    mark: Callable[..., None]
    read_seconds: float = 0.0  # read + decode so far


def _skip(info: PassInfo, what: object) -> None:
    log.warning("skipping a sample: %s", what)
    with info.errors.get_lock():
        info.errors.value += 1


def read_runs(shards: ShardSet, plan: RankPlan, positions: np.ndarray, info: PassInfo) -> Samples:
    """Read each run of positions with one seek into its shard; tag samples with position/weight.

    In a region set a run's units are crops of its regions: each region is read once per run
    and handed out with each unit (``__region__``, ``__unit__``) for ``DrawCrop``. With
    ``on_error="skip"`` a bad sample, or the unread rest of a damaged shard, comes out as
    placeholders (``{"__pos__": p, "__skipped__": True}``), so later stages know not to wait
    for them.
    """
    for run in runs(plan, positions):
        shard = shards.shards[run.shard]
        info.mark("reading", run.shard)
        sent = 0
        try:
            with shards.open(shard.url) as f:
                for sample in _run_samples(shards, f, run, plan, info.on_error):
                    if "__error__" in sample:  # one bad sample: the rest of the run reads on
                        _skip(info, sample.pop("__error__"))
                    sent += 1
                    yield sample
                    info.mark("reading", run.shard)
        except (ShardError, OSError) as exc:
            if info.on_error != "skip":
                raise
            _skip(info, f"the rest of {shard.url}: {exc}")
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


def timed(samples: Iterable[dict[str, Any]], info: PassInfo) -> Samples:
    """Add the seconds spent reading and decoding to ``info.read_seconds`` (for the bench)."""
    it = iter(samples)
    while True:
        started = time.perf_counter()
        try:
            sample = next(it)
        except StopIteration:
            return
        finally:
            info.read_seconds += time.perf_counter() - started
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


def checked(samples: Iterable[dict[str, Any]], info: PassInfo) -> Samples:
    """Drop what could not be read (``on_error="skip"``: done for this epoch, counted) and check
    the stored block's checksum, left until now: reading the block for it brings it into the
    CPU's caches just before it is augmented (``__warm__``)."""
    for sample in samples:
        if sample.get("__skipped__"):
            info.consumed[sample["__pos__"]] = 1
            continue
        if "__unchecked__" in sample:
            try:
                check_deferred(sample)
            except ShardError as exc:
                if info.on_error != "skip":
                    raise
                _skip(info, exc)
                info.consumed[sample["__pos__"]] = 1
                continue
            sample["__warm__"] = True
        yield sample


def prepared(
    samples: Iterable[dict[str, Any]],
    info: PassInfo,
    prepare: Any,
    draw: Any = None,
    batch_size: int | None = None,
) -> Samples:
    """Draw a region unit's crop (``draw``) and prepare each sample (``prepare``); when the
    stage writes its own output shape and the batch size is known, each image goes straight
    into its slot of the batch being assembled (shared memory in a worker), which ``collate``
    then passes on uncopied."""
    shape = prepare.out_shape
    arena = shape is not None and batch_size is not None
    batch = None
    for made, sample in enumerate(samples):
        info.mark("preparing")
        started = time.perf_counter()
        if draw is not None:
            sample = draw(sample, info.epoch)
        if arena:
            slot = made % batch_size  # type: ignore[operator]
            if slot == 0:
                batch = slots.batch_buffer(batch_size, shape, torch.float32)  # type: ignore[arg-type]
            out = prepare(sample, info.epoch, into=batch[slot])  # type: ignore[index]
        else:
            out = prepare(sample, info.epoch)
        out["__t_prep__"] = time.perf_counter() - started
        yield out


def tagged(samples: Iterable[dict[str, Any]], info: PassInfo) -> Samples:
    """The epoch and each sample's share of the read time; in the main process (no workers)
    each sample counts as consumed as it is handed on."""
    read_so_far = 0.0
    for out in samples:
        out["__t_read__"], read_so_far = info.read_seconds - read_so_far, info.read_seconds
        out["__epoch__"] = info.epoch
        if info.in_main:
            info.consumed[out["__pos__"]] = 1
        yield out
