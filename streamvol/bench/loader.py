"""``streamvol bench``: data-loader throughput per (workers, augmentation mode), where the time
goes, and whether the loader keeps a trainer fed."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.augment import load_spec
from streamvol.stream import DevicePrefetcher, loader, open_shards
from streamvol.train.setup import manifest_of

MODES = ("none", "cpu", "gpu")
STAGES = ("read", "augment", "collate", "h2d")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure: the grid of workers x augmentation modes, and how long."""

    shards: str
    workers: tuple[int, ...] = (0, 1, 2)
    modes: tuple[str, ...] = ("none", "cpu")
    batch_size: int = 16
    batches: int = 20
    warmup: int = 2
    repeats: int = 3
    preset: str = "default"
    split: str = "train"
    device: str = "auto"
    model: str | None = None
    timeout: float = 600.0
    storage_options: dict[str, Any] | None = None  # fsspec options for URL shards

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"--augment {','.join(bad)}: expected some of {', '.join(MODES)}")
        if any(w < 0 for w in self.workers):
            raise ValueError(f"--workers {self.workers}: expected counts >= 0")
        for name in ("batch_size", "batches", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected >= 1")


@dataclass
class Measurement:
    """One configuration's throughput over repeats, and its per-sample stage times."""

    workers: int
    mode: str
    samples_per_s: list[float]
    mvoxel_per_s: float
    mb_per_s: float
    stages_ms: dict[str, float]  # per sample, summed over the workers that made it
    total_ms: float  # wall time per sample, as the trainer sees it

    @property
    def median(self) -> float:
        return statistics.median(self.samples_per_s)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples_per_s"] = {
            "median": self.median,
            "min": min(self.samples_per_s),
            "max": max(self.samples_per_s),
            "repeats": self.samples_per_s,
        }
        return out


@dataclass
class BenchResult:
    config: BenchConfig
    device: str
    results: list[Measurement] = field(default_factory=list)
    trainer: dict[str, Any] | None = None
    verdict: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {k: v for k, v in asdict(self.config).items() if k != "storage_options"},
            "device": self.device,
            "machine": machine_info(),
            "results": [m.to_json() for m in self.results],
            "trainer": self.trainer,
            "verdict": self.verdict,
        }


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """What a benchmark figure means nothing without: CPU, cores, versions, GPU."""
    info = {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _endless(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Batches forever: a new pass (the next epoch) whenever one ends."""
    while True:
        yielded = False
        for batch in batches:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the shard split yielded no batch")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: BenchConfig, workers: int, mode: str, device: torch.device) -> Measurement:
    """Time ``config.batches`` batches (after warm-up) ``config.repeats`` times."""
    manifest = manifest_of(config.shards, config.storage_options)
    augment = load_spec(config.preset) if mode != "none" else None
    if augment is not None:
        need = augment.margin_shortfall(manifest["crop"], manifest["margin"])
        if need:
            raise ValueError(
                f"{config.shards}: shards keep a margin of {manifest['margin']} voxels but "
                f"--preset {config.preset!r} needs {list(need)}; choose a preset that fits"
            )
    ds = open_shards(
        config.shards,
        split=config.split,
        augment=augment,
        augment_device="gpu" if mode == "gpu" else "cpu",
        storage_options=config.storage_options,
    )
    dl = loader(ds, config.batch_size, workers, timeout=config.timeout)
    stats = manifest["stats"]
    prefetch = DevicePrefetcher(
        dl, device, offset=stats["mean"], scale=1 / max(stats["std"], 1e-12)
    )
    batches = _endless(prefetch)
    stored = np.prod(manifest["stored_shape"]) * np.dtype(manifest["dtype"]).itemsize
    out_voxels = float(np.prod(manifest["crop"]))
    rates, stage_sum, samples_sum, wall_sum = [], dict.fromkeys(STAGES, 0.0), 0, 0.0
    for _ in range(config.repeats):
        for _ in range(config.warmup):
            next(batches)
        _sync(device)
        started = time.perf_counter()
        samples = 0
        for _ in range(config.batches):
            batch = next(batches)
            samples += len(batch["__key__"])
            for stage, seconds in batch.get("__timing__", {}).items():
                stage_sum[stage] = stage_sum.get(stage, 0.0) + seconds
        _sync(device)
        wall = time.perf_counter() - started
        rates.append(samples / wall)
        samples_sum += samples
        wall_sum += wall
    median = statistics.median(rates)
    return Measurement(
        workers=workers,
        mode=mode,
        samples_per_s=rates,
        mvoxel_per_s=median * out_voxels / 1e6,
        mb_per_s=median * stored / 1e6,
        stages_ms={k: 1e3 * v / samples_sum for k, v in stage_sum.items()},
        total_ms=1e3 * wall_sum / samples_sum,
    )


def trainer_rate(
    config: BenchConfig, device: torch.device, *, steps: int = 10, warmup: int = 3
) -> dict[str, Any]:
    """Samples per second of forward + backward + optimizer step on the loader's batch shape."""
    from streamvol.train.config import TrainConfig
    from streamvol.train.setup import build_model, resolve_task

    manifest = manifest_of(config.shards, config.storage_options)
    train_config = TrainConfig(
        shards=config.shards, model=config.model or "auto", storage_options=config.storage_options
    )
    task = resolve_task(train_config, manifest)
    torch.manual_seed(0)
    model = build_model(train_config, task).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(config.batch_size, 1, *task.crop, device=device)
    outputs = model.num_outputs if hasattr(model, "num_outputs") else task.num_classes
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            started = time.perf_counter()
        if amp is not None:
            with amp:
                out = model(x)
        else:
            out = model(x)
        loss = out.float().square().mean() * (1.0 / max(outputs, 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "model": train_config.model if config.model else type(model).__name__,
        "samples_per_s": steps * config.batch_size / seconds,
        "step_ms": 1e3 * seconds / steps,
        "device": str(device),
    }


def verdict(
    loader_rate: float, trainer: float, workers: int, per_worker: float
) -> tuple[str, float]:
    """A plain sentence, and the fraction of time the trainer waits for data."""
    wait = max(0.0, 1.0 - loader_rate / trainer) if trainer > 0 else 0.0
    if loader_rate >= trainer:
        return (
            f"the loader keeps up: {loader_rate:.0f} samples/s against the trainer's "
            f"{trainer:.0f}; the trainer waits {100 * wait:.0f}% of the time",
            wait,
        )
    more = max(1, math.ceil(trainer / max(per_worker, 1e-9)) - max(workers, 1))
    return (
        f"the loader is the bottleneck ({loader_rate:.0f} samples/s against the trainer's "
        f"{trainer:.0f}; the trainer waits {100 * wait:.0f}% of the time): {more} more "
        "workers or --augment gpu",
        wait,
    )


def run_bench(config: BenchConfig, *, log: Callable[[str], None] | None = None) -> BenchResult:
    """Measure every (workers, mode) of ``config``; with a model, compare with its step rate."""
    device = _device(config.device)
    result = BenchResult(config, str(device))
    for mode in config.modes:
        for workers in config.workers:
            m = measure(config, workers, mode, device)
            result.results.append(m)
            if log:
                log(f"workers {workers}, augment {mode}: {m.median:.1f} samples/s")
    if config.model is not None and result.results:
        result.trainer = trainer_rate(config, device)
        best = max(result.results, key=lambda m: m.median)
        per_worker = best.median / max(best.workers, 1)
        text, wait = verdict(best.median, result.trainer["samples_per_s"], best.workers, per_worker)
        result.trainer["loader_over_trainer"] = best.median / result.trainer["samples_per_s"]
        result.trainer["trainer_waits"] = wait
        result.trainer["compared_with"] = {"workers": best.workers, "mode": best.mode}
        result.verdict = text
    return result


def plot(result: BenchResult, path: str | Path) -> Path:
    """Throughput against workers, one line per augmentation mode (median, min-max bars)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from streamvol.core.files import save_figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for mode in result.config.modes:
        rows = [m for m in result.results if m.mode == mode]
        if not rows:
            continue
        xs = [m.workers for m in rows]
        med = [m.median for m in rows]
        err = [
            [m.median - min(m.samples_per_s) for m in rows],
            [max(m.samples_per_s) - m.median for m in rows],
        ]
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=f"augment {mode}")
    if result.trainer:
        ax.axhline(
            result.trainer["samples_per_s"],
            ls="--",
            c="k",
            label=f"trainer ({result.trainer['model']})",
        )
    ax.set_xlabel("loader workers")
    ax.set_ylabel("samples / s")
    ax.set_title(f"streamvol loader on {result.device}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def table(result: BenchResult) -> Any:
    """A rich table of every configuration."""
    from rich.table import Table

    t = Table(title=f"loader throughput ({result.device}, batch {result.config.batch_size})")
    for name in (
        "workers",
        "augment",
        "samples/s",
        "min-max",
        "Mvox/s",
        "MB/s",
        *[f"{s} ms" for s in STAGES],
        "wall ms",
    ):
        t.add_column(name, justify="right")
    for m in result.results:
        t.add_row(
            str(m.workers),
            m.mode,
            f"{m.median:.1f}",
            f"{min(m.samples_per_s):.1f}-{max(m.samples_per_s):.1f}",
            f"{m.mvoxel_per_s:.2f}",
            f"{m.mb_per_s:.1f}",
            *[f"{m.stages_ms.get(s, 0.0):.2f}" for s in STAGES],
            f"{m.total_ms:.2f}",
        )
    return t


def parse_list(text: str, kind: type = int) -> tuple[Any, ...]:
    """``"0,1,2"`` -> (0, 1, 2)."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{text!r}: expected a comma-separated list") from None
