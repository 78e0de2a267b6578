"""What is timed: one ``Case`` per loader and worker count, each started afresh for every
repeat and shut down after it, every case once per round (``measure``)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _loaders.data import Data
from _loaders.kernel import KernelBatches
from _loaders.others import (
    NpyFiles,
    SeedStyle,
    monai_dataset,
    monai_worker_init,
    torch_loader,
    torchio_dataset,
)
from _loaders.workload import augment_spec

AUGMENTING = ("streamvol", "seed-style", "MONAI", "TorchIO")
READERS = ("streamvol shards", "streamvol shards + margin", ".npy files", "TIFF slices")


@dataclass
class Case:
    """One loader at one worker count, made afresh for every repeat and shut down after it, so
    no worker of one case keeps prefetching while another case is timed."""

    group: str  # "augment", "read" or "kernel"
    name: str
    workers: int
    make: Callable[[], Any]
    count: Callable[[Any], int] = lambda batch: len(batch)
    rates: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # streamvol: seconds per stage
    timed_samples: int = 0

    def run(self, batches: int, record: bool) -> None:
        """Start the loader, take ``2 x workers`` batches (at least 1) so the workers are
        started and past their first prefetch, then time ``batches`` batches."""
        source = self.make()
        it = endless(source)
        try:
            for _ in range(max(1, 2 * self.workers)):
                next(it)
            samples = 0
            stages: dict[str, float] = {}
            started = time.perf_counter()
            for _ in range(batches):
                batch = next(it)
                samples += self.count(batch)
                if isinstance(batch, dict):
                    for stage, seconds in batch.get("__timing__", {}).items():
                        stages[stage] = stages.get(stage, 0.0) + seconds
            rate = samples / (time.perf_counter() - started)
        finally:
            it.close()
            closing = getattr(source, "close", None)
            if closing is not None:
                closing()
            del it, source
            gc.collect()  # the DataLoader's persistent workers are joined when it is freed
        if record:
            self.rates.append(rate)
            self.timed_samples += samples
            for stage, seconds in stages.items():
                self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def endless(loader: Any) -> Iterator[Any]:
    """Batches forever: the next epoch whenever one ends (persistent workers stay)."""
    while True:
        yield from loader


def cases(data: Data, workers: tuple[int, ...], batch: int) -> list[Case]:
    out: list[Case] = []
    for w in workers:
        out += loader_cases(data, w, batch)
    out += kernel_cases(workers, batch)
    return out


def loader_cases(data: Data, w: int, batch: int) -> list[Case]:
    """Every loader at ``w`` workers: the augmenting ones, then the reading-only ones."""
    import streamvol

    spec = augment_spec()

    def sv(folder: Path, augment: Any) -> Any:
        ds = streamvol.open_shards(folder, augment=augment, augment_device="cpu")
        return streamvol.loader(ds, batch, w)

    def seed(augment: bool) -> Any:
        return torch_loader(SeedStyle(data.tiff, data.mean, data.std, augment), w, batch)

    def monai() -> Any:
        return torch_loader(monai_dataset(data), w, batch, worker_init_fn=monai_worker_init)

    def torchio() -> Any:
        import torchio as tio

        return torch_loader(torchio_dataset(data), w, batch, cls=tio.SubjectsLoader)

    def npy() -> Any:
        return torch_loader(NpyFiles(data.npy, data.mean, data.std), w, batch)

    def images(b: Any) -> int:
        return len(b["image"])

    return [
        Case("augment", "streamvol", w, lambda: sv(data.shards, spec), images),
        Case("augment", "seed-style", w, lambda: seed(True)),
        Case("augment", "MONAI", w, monai),
        Case("augment", "TorchIO", w, torchio, lambda b: len(b["image"]["data"])),
        Case("read", "streamvol shards", w, lambda: sv(data.shards0, None), images),
        Case("read", "streamvol shards + margin", w, lambda: sv(data.shards, None), images),
        Case("read", ".npy files", w, npy),
        Case("read", "TIFF slices", w, lambda: seed(False)),
    ]


def kernel_cases(workers: tuple[int, ...], batch: int) -> list[Case]:
    """The bare kernel at each thread count the loaders use (0 workers: 1 thread)."""
    out = []
    for n in sorted({max(w, 1) for w in workers}):
        if n == 1:
            out.append(Case("kernel", "kernel, 1 thread", 1, lambda: KernelBatches(batch), int))
            continue
        out += [
            Case(
                "kernel",
                f"kernel, {n} processes x 1 thread",
                n,
                lambda n=n: KernelBatches(batch, processes=n),
                int,
            ),
            Case(
                "kernel",
                f"kernel, {n} numba threads",
                n,
                lambda n=n: KernelBatches(batch, threads=n),
                int,
            ),
        ]
    return out


def measure(all_cases: list[Case], batches: int, repeats: int, log: Callable[[str], None]) -> None:
    """A warm-up round, then ``repeats`` rounds; every case once per round."""
    for round_ in range(repeats + 1):
        started = time.perf_counter()
        for case in all_cases:
            case.run(batches, record=round_ > 0)
        what = "warm-up" if round_ == 0 else f"repeat {round_}/{repeats}"
        log(f"{what}: {time.perf_counter() - started:.0f} s")


def find(all_cases: list[Case], name: str, workers: int) -> Case | None:
    return next((c for c in all_cases if c.name == name and c.workers == workers), None)
