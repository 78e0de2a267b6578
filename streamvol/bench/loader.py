"""``streamvol bench``: data-loader throughput per (workers, augmentation mode), where the time
goes, and whether the loader keeps a trainer fed.

The verdict is about the configuration a run would train with: the ``augment`` preset, run
where ``augment_device`` says, on ``train_workers`` loader workers (``streamvol train``'s
``--augment``, ``--augment-device`` and ``--workers``), measured even when the grid of
``workers`` x ``modes`` leaves it out."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamvol.augment import load_spec
from streamvol.core.manifest import read_manifest
from streamvol.errors import BadInput, BadOption
from streamvol.stream import DevicePrefetcher, loader, open_shards
from streamvol.train.config import TASKS

MODES = ("none", "cpu", "gpu")
STAGES = ("read", "augment", "collate", "h2d")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure: the grid of workers x augmentation modes, how long, and the
    configuration the verdict is about (``augment`` on ``augment_device``, ``train_workers``)."""

    shards: str
    workers: tuple[int, ...] = (0, 1, 2)
    modes: tuple[str, ...] = ("none", "cpu")
    batch_size: int = 16
    batches: int = 20
    warmup: int = 2
    repeats: int = 3
    augment: str = "default"  # the preset (or file) the cpu and gpu modes apply
    split: str = "train"
    device: str = "auto"
    model: str | None = None
    task: str = "auto"  # the task the model's step is timed for (streamvol train --task)
    train_workers: int = 2  # the loader workers training uses (streamvol train --workers)
    augment_device: str = "cpu"  # where training augments (streamvol train --augment-device)
    timeout: float = 600.0
    storage_options: dict[str, Any] | None = None  # fsspec options for URL shards

    def __post_init__(self) -> None:
        if set(self.augment.split(",")) <= set(MODES) - {"none"} or "," in self.augment:
            raise BadOption(
                "augment",
                self.augment,
                "expected an augmentation preset (none, flips, default, cryoet) or a file, not "
                "modes (none, cpu, gpu: they go in modes)",
            )
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise BadOption("modes", ",".join(bad), f"expected some of {', '.join(MODES)}")
        if self.task not in TASKS:
            raise BadOption("task", self.task, f"expected one of {', '.join(TASKS)}")
        if self.augment_device not in ("cpu", "gpu"):
            raise BadOption("augment_device", self.augment_device, "expected cpu or gpu")
        if any(w < 0 for w in self.workers):
            raise BadOption("workers", self.workers, "expected counts >= 0")
        if self.train_workers < 0:
            raise BadOption("train_workers", self.train_workers, "expected a count >= 0")
        for name in ("batch_size", "batches", "repeats"):
            if getattr(self, name) < 1:
                raise BadOption(name, getattr(self, name), "expected >= 1")

    @property
    def trained(self) -> tuple[str, int]:
        """(mode, workers) of the configuration training uses: what the verdict is about."""
        mode = "none" if load_spec(self.augment) is None else self.augment_device
        return mode, self.train_workers

    def grid(self) -> list[tuple[str, int]]:
        """Every (mode, workers) to measure: the grid, then the trained one if not in it."""
        grid = [(mode, workers) for mode in self.modes for workers in self.workers]
        if self.model is not None and self.trained not in grid:
            grid.append(self.trained)
        return grid


@dataclass
class Measurement:
    """One configuration's throughput over repeats, and its per-sample stage times."""

    workers: int
    mode: str
    augment_device: str | None  # where the augmentation ran: None (mode none), cpu, cuda
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
    notes: list[str] = field(default_factory=list)  # what a reader must know about the figures

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {k: v for k, v in asdict(self.config).items() if k != "storage_options"},
            "device": self.device,
            "machine": machine_info(),
            "results": [m.to_json() for m in self.results],
            "trainer": self.trainer,
            "verdict": self.verdict,
            "notes": self.notes,
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
            raise BadInput("the shard split yielded no batch")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    config: BenchConfig,
    workers: int,
    mode: str,
    device: torch.device,
    *,
    tick: Callable[[], None] | None = None,
) -> Measurement:
    """Time ``config.batches`` batches (after warm-up) ``config.repeats`` times; ``tick()``
    after every batch, warm-up included. Mode ``gpu`` augments on ``device``, whatever it is
    (the CPU device without CUDA: ``augment_device`` says so)."""
    manifest = read_manifest(config.shards, config.storage_options)
    augment = load_spec(config.augment) if mode != "none" else None
    if augment is not None:
        augment = augment.on_voxels(manifest.get("voxel_size"))
        need = augment.margin_shortfall(manifest["crop"], manifest["margin"])
        if need:
            raise BadOption(
                "augment",
                config.augment,
                f"{config.shards}: shards keep a margin of {manifest['margin']} voxels but it "
                f"needs {list(need)}; choose a preset that fits (flips needs none) or reshard "
                f"with context='auto', augment={config.augment!r}",
            )
    ds = open_shards(
        config.shards,
        split=config.split,
        augment=augment,
        augment_device="gpu" if mode == "gpu" else "cpu",
        storage_options=config.storage_options,
    )
    dl = loader(ds, config.batch_size, workers, timeout=config.timeout)
    batches = _endless(DevicePrefetcher(dl, device))
    stored = np.prod(manifest["stored_shape"]) * np.dtype(manifest["dtype"]).itemsize
    out_voxels = float(np.prod(manifest["crop"]))
    rates, stage_sum, samples_sum, wall_sum = [], dict.fromkeys(STAGES, 0.0), 0, 0.0
    for _ in range(config.repeats):
        for _ in range(config.warmup):
            next(batches)
            if tick:
                tick()
        _sync(device)
        started = time.perf_counter()
        samples = 0
        for _ in range(config.batches):
            batch = next(batches)
            samples += len(batch["__key__"])
            for stage, seconds in batch.get("__timing__", {}).items():
                stage_sum[stage] = stage_sum.get(stage, 0.0) + seconds
            if tick:
                tick()
        _sync(device)
        wall = time.perf_counter() - started
        rates.append(samples / wall)
        samples_sum += samples
        wall_sum += wall
    median = statistics.median(rates)
    ran = {"none": None, "cpu": "cpu"}.get(mode, device.type) if augment is not None else None
    return Measurement(
        workers=workers,
        mode=mode,
        augment_device=ran,
        samples_per_s=rates,
        mvoxel_per_s=median * out_voxels / 1e6,
        mb_per_s=median * stored / 1e6,
        stages_ms={k: 1e3 * v / samples_sum for k, v in stage_sum.items()},
        total_ms=1e3 * wall_sum / samples_sum,
    )


def trainer_rate(
    config: BenchConfig,
    device: torch.device,
    *,
    steps: int = 10,
    warmup: int | None = None,
    budget_s: float = 30.0,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Samples per second of forward + backward + optimizer step on the loader's batch shape.

    ``steps`` are timed after ``warmup`` ones (default: 3 on CUDA, whose first steps choose
    kernels; 1 elsewhere). Past ``budget_s`` seconds, timing stops after 3 steps: a 3D U-Net
    on 48^3 crops takes 15 s a step on 2 CPU cores."""
    from streamvol.train.rng import RunRng

    with RunRng(0, device).active():  # the same weights and input every time
        train_config, task, model = trainer_fits(config, device)
        x = torch.randn(config.batch_size, 1, *task.crop, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    outputs = model.num_outputs if hasattr(model, "num_outputs") else task.num_classes
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else None

    def step() -> None:
        with amp if amp is not None else contextlib.nullcontext():
            out = model(x)
        loss = out.float().square().mean() * (1.0 / max(outputs, 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if tick:
            tick()

    for _ in range(trainer_warmup(device) if warmup is None else warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    timed = 0
    while timed < steps:
        step()
        timed += 1
        if timed >= 3 and time.perf_counter() - started > budget_s:
            break
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "model": train_config.model if config.model else type(model).__name__,
        "samples_per_s": timed * config.batch_size / seconds,
        "step_ms": 1e3 * seconds / timed,
        "steps": timed,
        "device": str(device),
    }


def trainer_fits(config: BenchConfig, device: torch.device) -> tuple[Any, Any, torch.nn.Module]:
    """The trainer's configuration, task and model on ``device``, once its training step is
    known to fit in memory (as ``train`` checks it): a step that would not is refused before
    anything is measured, rather than killed mid-step."""
    from streamvol.core.heap import keep_freed_memory
    from streamvol.train.config import TrainConfig
    from streamvol.train.setup import build_model, check_memory, resolve_task

    manifest = read_manifest(config.shards, config.storage_options)
    train_config = TrainConfig(
        shards=config.shards,
        model=config.model or "auto",
        task=config.task,
        batch_size=config.batch_size,
        storage_options=config.storage_options,
    )
    task = resolve_task(train_config, manifest)
    if device.type == "cpu":
        keep_freed_memory("steps")  # as the trainer does
    model = build_model(train_config, task).to(device)
    memory = check_memory(
        train_config, task, model, device, device.type == "cuda", warn=False, accumulates=False
    )
    if memory and memory["shortfall"]:
        raise BadOption("batch_size", config.batch_size, memory["shortfall"])
    return train_config, task, model


def trainer_warmup(device: torch.device) -> int:
    """Untimed training steps before timing: CUDA's first steps choose and compile kernels."""
    return 3 if device.type == "cuda" else 1


def describe(mode: str, workers: int, augment: str) -> str:
    """A configuration as the options of ``streamvol train`` that choose it:
    ``--augment cryoet --augment-device gpu --workers 2``."""
    what = "--augment none" if mode == "none" else f"--augment {augment}"
    if mode == "gpu":
        what += " --augment-device gpu"
    return f"{what} --workers {workers}"


def verdict(
    loader_rate: float,
    trainer_rate: float,
    *,
    configuration: str,
    others: Sequence[tuple[str, float]] = (),
) -> tuple[str, float]:
    """Whether the loader, in the ``configuration`` training uses, keeps the trainer fed, by how
    much, and the fraction of time the trainer would wait for data. When it does not keep up,
    the best of ``others`` (description, rate) that does is named."""
    wait = max(0.0, 1.0 - loader_rate / trainer_rate) if trainer_rate > 0 else 0.0
    if loader_rate >= trainer_rate:
        ratio = loader_rate / trainer_rate if trainer_rate > 0 else math.inf
        return (
            f"the loader keeps up with {configuration}: {_num(loader_rate)} samples/s, "
            f"{_num(ratio)}x the trainer's {_num(trainer_rate)}",
            wait,
        )
    text = (
        f"the loader does not keep up with {configuration}: {_num(loader_rate)} of the "
        f"trainer's {_num(trainer_rate)} samples/s ({100 * loader_rate / trainer_rate:.0f}%); "
        f"the trainer would wait {100 * wait:.0f}% of the time"
    )
    enough = [(rate, name) for name, rate in others if rate >= trainer_rate]
    if enough:
        rate, name = max(enough)
        text += f"; {name} keeps up ({_num(rate)} samples/s)"
    else:
        text += "; no measured configuration keeps up: try more workers or --augment-device gpu"
    return text, wait


def run_bench(
    config: BenchConfig,
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Measure every (mode, workers) of ``config.grid()``; with a model, compare the trained
    configuration with its training step. ``progress(done, total)`` counts batches and steps."""
    device = _device(config.device)
    result = BenchResult(config, str(device))
    grid = config.grid()
    steps = trainer_warmup(device) + 10 if config.model is not None else 0  # at most
    total = len(grid) * config.repeats * (config.warmup + config.batches) + steps
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    if config.model is not None:
        trainer_fits(config, device)  # before the loader's minutes
    if "gpu" in {mode for mode, _ in grid} and device.type != "cuda":
        result.notes.append(
            f"augment gpu ran on the {device.type} device (no CUDA here): the GPU code path, "
            "not a GPU's speed"
        )
    for mode, workers in grid:
        m = measure(config, workers, mode, device, tick=tick)
        result.results.append(m)
        if log:
            where = f" (on the {m.augment_device} device)" if mode == "gpu" else ""
            log(f"workers {workers}, augment {mode}{where}: {m.median:.1f} samples/s")
    if config.model is not None and result.results:
        result.trainer = trainer_rate(config, device, tick=tick)
        if progress:
            progress(total, total)  # the step may have stopped early
        mode, workers = config.trained
        chosen = next(m for m in result.results if (m.mode, m.workers) == (mode, workers))
        rate = result.trainer["samples_per_s"]
        others = [
            (describe(m.mode, m.workers, config.augment), m.median)
            for m in result.results
            if m is not chosen and m.mode != "none"
        ]
        text, wait = verdict(
            chosen.median,
            rate,
            configuration=describe(mode, workers, config.augment),
            others=others,
        )
        result.trainer["loader_over_trainer"] = chosen.median / rate
        result.trainer["trainer_waits"] = wait
        result.trainer["compared_with"] = {
            "workers": workers,
            "mode": mode,
            "augment": config.augment,
            "samples_per_s": chosen.median,
        }
        result.verdict = text
    return result


def plot(result: BenchResult, path: str | Path) -> Path:
    """Throughput against workers, one line per augmentation mode (median, min-max bars), the
    trainer's rate as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from streamvol.core.files import save_figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for mode in dict.fromkeys(m.mode for m in result.results):
        rows = sorted((m for m in result.results if m.mode == mode), key=lambda m: m.workers)
        xs = [m.workers for m in rows]
        med = [m.median for m in rows]
        err = [
            [m.median - min(m.samples_per_s) for m in rows],
            [max(m.samples_per_s) - m.median for m in rows],
        ]
        ran = rows[0].augment_device
        label = {"none": "no augmentation", "cpu": "augment in the workers (cpu)"}.get(
            mode, f"augment on the device ({ran})"
        )
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=label)
    if result.trainer:
        ax.axhline(
            result.trainer["samples_per_s"],
            ls="--",
            c="k",
            label=f"trainer: {result.trainer['model']} on {result.trainer['device']}",
        )
    compared = (result.trainer or {}).get("compared_with")
    if compared:
        ax.plot(
            compared["workers"],
            compared["samples_per_s"],
            marker="*",
            ms=14,
            ls="",
            c="gold",
            mec="k",
            label="the verdict's configuration",
        )
    workers = sorted({m.workers for m in result.results})
    ax.set_xticks(workers)  # whole workers only
    ax.set_xlabel("loader workers")
    ax.set_ylabel("samples / s (median, min-max)")
    ax.set_ylim(bottom=0)
    config = result.config
    ax.set_title(
        f"loader throughput: split {config.split}, --augment {config.augment}, "
        f"batch {config.batch_size}, {result.device}",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=100)


def table(result: BenchResult) -> Any:
    """A rich table of every configuration, within 100 columns: rate, spread, MB/s, and the
    time per sample of each stage."""
    from rich import box
    from rich.table import Table

    gpu_on_cpu = any(m.mode == "gpu" and m.augment_device == "cpu" for m in result.results)
    caption = "read .. wall: ms a sample (stages summed over workers; wall as the trainer sees it)"
    if gpu_on_cpu:
        caption += "\ngpu*: the GPU code path on the CPU device (no CUDA here)"
    t = Table(
        title=f"loader throughput: split {result.config.split}, --augment "
        f"{result.config.augment}, batch {result.config.batch_size}, {result.device}",
        caption=caption,
        box=box.SIMPLE_HEAD,
    )
    for name in ("workers", "augment", "samples/s", "min-max", "MB/s", "read", "aug", "collate"):
        t.add_column(name, justify="right")
    for name in ("h2d", "wall"):
        t.add_column(name, justify="right")
    for m in result.results:
        mode = "gpu*" if m.mode == "gpu" and m.augment_device == "cpu" else m.mode
        t.add_row(
            str(m.workers),
            mode,
            _num(m.median),
            f"{_num(min(m.samples_per_s))}-{_num(max(m.samples_per_s))}",
            _num(m.mb_per_s),
            *[f"{m.stages_ms.get(s, 0.0):.2f}" for s in STAGES],
            f"{m.total_ms:.2f}",
        )
    return t


def _num(value: float) -> str:
    """A rate or ratio as people read it: 1707, 17.1, 1.0, 0.28 (never 1 for 1.04)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def parse_list(text: str, kind: type = int, name: str = "workers") -> tuple[Any, ...]:
    """``"0,1,2"`` -> (0, 1, 2); ``name`` is the parameter an error names."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadOption(name, text, f"expected a comma-separated list of {kind.__name__}") from None
