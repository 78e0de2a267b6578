"""One command for a CUDA machine: the GPU checks and the GPU benchmarks, written into ``--out``.

    python benchmarks/device.py --out DIR [--budget 450] [--sections tests,routes,augment,feed]

Sections, each in a process of its own under a time budget of its own (a hang or a slow section
costs only itself), each saving its results as it goes:

1. ``tests``: ``pytest -m gpu``: the CUDA backend against the CPU backend, ``DevicePrefetcher``
   on a CUDA side stream, pinned batches over the loader's reused slots for two epochs, bf16 AMP
   training steps and a short training run with GPU augmentation;
2. ``routes``: the backend's geometry against kornia's ``warp_affine3d``, ``F.affine_grid`` and
   the previous float64 grid (``gpu_routes.py``): speed and error;
3. ``augment``: GPU augmentation throughput, free rotation + flips + noise, float32 out, at 64^3
   and 96^3 for batches of 16, 64 and 256: streamvol's backend against kornia's
   ``AugmentationSequential`` and MONAI's transforms on the GPU, on the same batches;
4. ``feed``: ``streamvol bench`` (its library functions) on synthetic 64^3 nuclei shards at 2, 4
   and 8 workers, CPU against GPU augmentation, the unet3d and se_resnet3d training steps, the
   fraction of time each trainer would be busy, and the unet3d trainer actually fed by the loader.

``DIR/device.json`` holds everything and ``DIR/device.md`` the tables; both are rewritten after
every section, and each section's log is ``DIR/<section>.log``. The budgets (seconds, scaled to
``--budget``) keep the whole under 8 minutes on a 16-core H100/H200 machine. Without CUDA the
script exits 0 at once and writes which sections it skipped. ``--dry-run`` runs every section on
the CPU at toy sizes, to check the script itself (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

SECTIONS: dict[str, tuple[str, int]] = {  # name: (what it does, seconds of the 450 it gets)
    "tests": ("pytest -m gpu: backend on CUDA vs CPU, prefetcher stream, pinned slots, AMP", 170),
    "routes": ("geometry routes on CUDA: streamvol vs kornia warp_affine3d vs others", 35),
    "augment": ("GPU augmentation crops/s, 64^3 and 96^3, batch 16/64/256, vs kornia, MONAI", 100),
    "feed": ("streamvol bench: unet3d / se_resnet3d, 2/4/8 workers, CPU vs GPU augmentation", 145),
}
SIZES, BATCHES = (64, 96), (16, 64, 256)
TARGET_CROPS, TARGET_VS_KORNIA, TARGET_BUSY = 50_000, 3.0, 0.9


# --- results ------------------------------------------------------------------------------------


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def versions() -> dict[str, str | None]:
    """Versions of what the figures depend on (None when not installed), without importing."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("kornia", "monai", "numpy", "numba"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    from streamvol.bench.loader import machine_info

    info = machine_info()
    info["versions"] = versions()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables (what RESULTS.md takes)."""
    m = report.get("machine", {})
    lines = [
        f"# Device check ({report.get('started', '')})",
        "",
        f"Machine: {m.get('cuda') or 'no CUDA device'}, {m.get('cpu')}, {m.get('cpus')} cores; "
        f"versions {json.dumps(m.get('versions', {}))}. Command: `{report.get('command')}`.",
        "",
    ]
    if report.get("dry_run"):
        lines += [
            "Dry run on the CPU at toy sizes: it checks the script; its figures mean nothing."
        ]
    elif not report.get("cuda"):
        lines += ["No CUDA device: nothing was measured. Skipped:", ""]
        lines += [f"- {s}" for s in report.get("skipped", [])]
    for name, section in report.get("sections", {}).items():
        lines += ["", f"## {name}: {section.get('status')} ({section.get('seconds', 0):.0f} s)", ""]
        if section.get("log_tail"):  # a section that failed or ran out of time: why
            lines += ["```", section["log_tail"][-1500:].strip(), "```", ""]
        data = section.get("results") or {}
        render = RENDER.get(name)
        if render and data:
            try:
                lines += render(data)
            except Exception as err:  # partial results of a section cut short: show them raw
                lines += [
                    f"(not rendered: {_error(err)})",
                    "",
                    "```",
                    json.dumps(data)[:4000],
                    "```",
                ]
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> None:
    _atomic_json(out / "device.json", report)
    (out / "device.md").write_text(markdown(report))


# --- section: tests -----------------------------------------------------------------------------


def section_tests(out: Path, deadline: float, save: Callable, dry: bool, scratch: Path) -> None:
    xml = out / "gpu-tests.xml"
    marker = "gpu" if not dry else "gpu or not gpu"
    paths = ["tests"] if not dry else ["tests/augment/test_noise.py"]
    cmd = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider", "-rfEs"]
    cmd += [f"--junitxml={xml}", *paths]
    save({"command": " ".join(cmd[1:]), "status": "running"})
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, timeout=max(deadline - time.time(), 1), capture_output=True, text=True
        )
        status, tail = f"exit {proc.returncode}", (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as err:
        status, tail = "timed out", str(err.stdout or "")[-4000:]
    result: dict[str, Any] = {"command": " ".join(cmd[1:]), "status": status, "tail": tail}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        cases = []
        for case in suite.iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                found = case.find(tag)
                if found is not None:
                    outcome, message = tag, (found.get("message") or "")[:300]
            name = f"{case.get('classname')}::{case.get('name')}"
            cases.append([name, outcome, float(case.get("time", 0)), message])
        result["counts"] = {
            k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")
        }
        result["cases"] = cases
    save(result)


def render_tests(data: dict[str, Any]) -> list[str]:
    lines = [f"`{data.get('command')}`: {data.get('status')}, {data.get('counts')}", ""]
    rows = [[c[0], c[1], f"{c[2]:.1f}", c[3]] for c in data.get("cases", []) if c[1] != "skipped"]
    return lines + _table(["test", "outcome", "s", "message"], rows)


# --- section: routes ----------------------------------------------------------------------------


def section_routes(out: Path, deadline: float, save: Callable, dry: bool, scratch: Path) -> None:
    from gpu_routes import compare

    device = torch.device("cpu" if dry else "cuda")
    configs = [(16, 4)] if dry else [(64, 16), (64, 256), (96, 16), (96, 256)]
    rows: list[dict] = []
    for size, n in configs:
        if time.time() > deadline - 10:
            rows.append({"size": size, "batch": n, "route": "skipped: out of time"})
            continue
        rows += compare(device, (size,), (n,), seconds=0.1 if dry else 0.3, rounds=2)
        save({"rows": rows})
        if device.type == "cuda":
            torch.cuda.empty_cache()


def render_routes(data: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{r['size']}^3",
            r["batch"],
            r["route"],
            f"{r.get('crops_per_s', float('nan')):.0f}",
            f"{r.get('max_error', float('nan')):.1e}",
        ]
        for r in data.get("rows", [])
    ]
    return _table(["output", "batch", "route", "crops/s", "max error vs float64"], rows)


# --- section: augment ---------------------------------------------------------------------------


def _spec() -> Any:
    from streamvol.augment import Augment, Flip, Noise, Rotate

    return Augment(
        rotate=Rotate("free", 180.0), flip=Flip((0.5, 0.5, 0.5)), noise=Noise((0.05, 0.1), p=1.0)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step: Callable[[], Any], n: int, seconds: float, device: torch.device) -> float:
    """Crops per second of ``step`` (``n`` crops a call): a warm-up call, then calls for
    ``seconds`` (at least 2), timed to the device's last kernel."""
    step()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        step()
        calls += 1
    _sync(device)
    return calls * n / (time.perf_counter() - started)


def same_batch(size: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` float32 stored blocks (crop + free-rotation margin), as streamvol's GPU path gets
    them, and their central crops, as kornia and MONAI take them: the same data for all."""
    from streamvol.shard.plan import rotation_margin

    m = rotation_margin(size)[0]
    blocks = torch.rand((n, 1, *(size + 2 * m,) * 3), device=device)
    return blocks, blocks[:, :, m:-m, m:-m, m:-m].contiguous()


def streamvol_step(blocks: torch.Tensor, crops: torch.Tensor) -> tuple[Callable, dict[str, Any]]:
    """apply_gpu on the stored blocks, with parameters drawn beforehand on the CPU (the loader
    draws them in its workers); also times that draw."""
    from streamvol.augment import apply_gpu, stack_params

    spec, n, stored, out = _spec(), len(blocks), tuple(blocks.shape[2:]), tuple(crops.shape[2:])
    started = time.perf_counter()
    params = stack_params(
        [spec.sample(np.random.default_rng([0, i]), stored, out) for i in range(n)]
    )
    draw = (time.perf_counter() - started) / n
    params = params.to(blocks.device)
    batch = {"image": blocks}
    return lambda: apply_gpu(batch, params), {"stored": stored, "draw_ms_per_crop": 1e3 * draw}


def kornia_step(blocks: torch.Tensor, crops: torch.Tensor) -> tuple[Callable, dict[str, Any]]:
    """kornia's AugmentationSequential (3D rotation of any angle, three flips) on the crops,
    plus Gaussian noise (kornia has no 3D noise augmentation)."""
    import kornia.augmentation as ka

    seq = ka.AugmentationSequential(
        ka.RandomRotation3D(degrees=180.0, p=1.0),
        ka.RandomDepthicalFlip3D(p=0.5),
        ka.RandomVerticalFlip3D(p=0.5),
        ka.RandomHorizontalFlip3D(p=0.5),
        data_keys=["input"],
    ).to(crops.device)

    def step() -> torch.Tensor:
        with torch.no_grad():
            out = seq(crops)
            return out + 0.1 * torch.randn_like(out)

    return step, {}


def monai_step(blocks: torch.Tensor, crops: torch.Tensor) -> tuple[Callable, dict[str, Any]]:
    """MONAI's transforms on GPU tensors, one crop at a time (they take one image): RandRotate
    (any angle on each axis), three RandFlips, RandGaussianNoise."""
    from augment import monai_transform  # benchmarks/augment.py, beside this script
    from monai.data import set_track_meta

    set_track_meta(False)
    transform = monai_transform()

    def step() -> list:
        with torch.no_grad():
            return [transform(crop) for crop in crops]

    return step, {}


LIBRARIES = {
    "streamvol (kornia geometry + torch)": streamvol_step,
    "kornia AugmentationSequential": kornia_step,
    "MONAI (per crop)": monai_step,
}


def noise_rows(device: torch.device, size: int, n: int, seconds: float) -> list[dict]:
    """The noise field alone: the fused CUDA kernel against the torch ops."""
    from streamvol.augment._noise import normal_field_torch

    seeds = torch.arange(n, dtype=torch.int64, device=device)
    rows = []
    for fused in [True, False] if device.type == "cuda" else [False]:
        name = "noise field, fused kernel" if fused else "noise field, torch int64 ops"
        try:
            r = _rate(
                lambda f=fused: normal_field_torch(seeds, (size,) * 3, fused=f), n, seconds, device
            )
            rows.append({"size": size, "batch": n, "library": name, "crops_per_s": r})
        except Exception as err:  # the fused kernel failing is a finding, not a crash
            rows.append({"size": size, "batch": n, "library": name, "error": repr(err)[:300]})
    return rows


def section_augment(out: Path, deadline: float, save: Callable, dry: bool, scratch: Path) -> None:
    from streamvol.augment._noise import noise_path

    device = torch.device("cpu" if dry else "cuda")
    sizes, batches, seconds = ((16,), (4,), 0.1) if dry else (SIZES, BATCHES, 0.5)
    rows: list[dict] = []
    result: dict[str, Any] = {"rows": rows}
    for size in sizes:
        for n in batches:
            blocks, crops = same_batch(size, n, device)
            for library, factory in LIBRARIES.items():
                row: dict[str, Any] = {"size": size, "batch": n, "library": library}
                rows.append(row)
                if time.time() > deadline - 8:
                    row["error"] = "skipped: out of time"
                    continue
                try:  # MONAI goes crop by crop: at batch 256 one call can take seconds
                    step, extra = factory(blocks, crops)
                    row.update(extra)
                    row["crops_per_s"] = _rate(step, n, seconds, device)
                    del step
                except Exception as err:  # a missing MONAI, out of memory: record and go on
                    row["error"] = _error(err)
                result["noise_path"] = noise_path(device)
                save(result)
            del blocks, crops
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if time.time() < deadline - 5:
        rows += noise_rows(device, sizes[0], batches[-1], seconds)
    result["targets"] = augment_targets(rows, sizes[0], batches[-1])
    save(result)


def augment_targets(rows: list[dict], size: int, n: int) -> list[str]:
    """The issue's targets for the GPU backend, met or missed, with the figures."""
    at = {r["library"]: r.get("crops_per_s") for r in rows if (r["size"], r["batch"]) == (size, n)}
    ours, theirs = (
        at.get("streamvol (kornia geometry + torch)"),
        at.get("kornia AugmentationSequential"),
    )
    out = []
    if ours:
        met = "met" if ours >= TARGET_CROPS else "MISSED"
        out.append(f"{size}^3, batch {n}: {ours:,.0f} crops/s (target {TARGET_CROPS:,}): {met}")
    if ours and theirs:
        ratio = ours / theirs
        met = "met" if ratio >= TARGET_VS_KORNIA else "MISSED"
        out.append(
            f"{ratio:.1f}x kornia AugmentationSequential (target {TARGET_VS_KORNIA}x): {met}"
        )
    return out


def render_augment(data: dict[str, Any]) -> list[str]:
    rows = []
    for r in data.get("rows", []):
        rate = r.get("crops_per_s")
        rows.append(
            [
                f"{r['size']}^3",
                r["batch"],
                r["library"],
                f"{rate:,.0f}" if rate else r.get("error", ""),
                f"{rate * r['size'] ** 3 / 1e9:.2f}" if rate else "",
            ]
        )
    lines = _table(["output", "batch", "library", "crops/s", "Gvoxel/s"], rows)
    lines += ["", f"Noise path: {data.get('noise_path')}."]
    draws = [r["draw_ms_per_crop"] for r in data.get("rows", []) if "draw_ms_per_crop" in r]
    if draws:
        lines.append(
            f"streamvol's parameters are drawn on the CPU (in the loader's workers): "
            f"{min(draws):.3f} ms a crop, not in the figures above."
        )
    lines += ["", *[f"- {t}" for t in data.get("targets", [])]]
    return lines


# --- section: feed ------------------------------------------------------------------------------


def make_shards(root: Path, samples: int, size: int) -> Path:
    """Synthetic nuclei (uint16, masks, classes), sharded one per sample with the margin the
    ``default`` preset needs."""
    from streamvol import synth
    from streamvol.shard import parse_config, shard

    data = synth.make("nuclei", root / "nuclei", n=samples, size=size)
    config = parse_config(
        [data],
        plan="sample",
        crop=size,
        context="auto",
        augment="default",
        split="1",
        shard_size=32,
    )
    shard(config, root / "shards", workers=min(os.cpu_count() or 2, 16))
    return root / "shards"


# the trainers timed on the nuclei shards: the U-Net segments their masks, the SE-ResNet
# classifies their crops (the set's own task)
TASK = {"unet3d": "segmentation", "se_resnet3d": "auto"}


def fed_rate(config: Any, workers: int, mode: str, device: torch.device, steps: int) -> float:
    """Samples per second of the trainer's step (bf16 autocast on CUDA) fed by the loader and
    ``DevicePrefetcher``: what ``trainer_rate`` measures on a resident batch, with the data."""
    from streamvol.augment import load_spec
    from streamvol.bench.loader import _endless
    from streamvol.core.manifest import read_manifest
    from streamvol.stream import DevicePrefetcher, loader, open_shards
    from streamvol.train.config import TrainConfig
    from streamvol.train.setup import build_model, resolve_task

    manifest = read_manifest(config.shards)
    train_config = TrainConfig(shards=config.shards, model=config.model, task=config.task)
    task = resolve_task(train_config, manifest)
    model = build_model(train_config, task).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ds = open_shards(config.shards, augment=load_spec(config.augment), augment_device=mode, seed=1)
    batches = _endless(DevicePrefetcher(loader(ds, config.batch_size, workers), device))
    amp = device.type == "cuda"
    samples = 0
    for i in range(steps + 3):
        if i == 3:
            _sync(device)
            started, samples = time.perf_counter(), 0
        x = next(batches)["image"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples += len(x)
    _sync(device)
    return samples / (time.perf_counter() - started)


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:300]


def section_feed(out: Path, deadline: float, save: Callable, dry: bool, scratch: Path) -> None:
    from streamvol.bench.loader import BenchConfig, measure, trainer_rate

    device = torch.device("cpu" if dry else "cuda")
    samples, size = (8, 16) if dry else (128, 64)
    workers = (0, 2) if dry else (2, 4, 8)
    result: dict[str, Any] = {"loader": [], "trainers": {}, "fed": []}
    started = time.perf_counter()
    shards = make_shards(scratch, samples, size)
    result["data"] = {
        "samples": samples,
        "crop": size,
        "preset": "default",
        "batch": 4 if dry else 16,
        "seconds_to_make": time.perf_counter() - started,
    }
    save(result)
    config = BenchConfig(
        shards=str(shards),
        workers=workers,
        modes=("cpu", "gpu"),
        batch_size=result["data"]["batch"],
        batches=2 if dry else 20,
        warmup=1 if dry else 2,
        repeats=1 if dry else 2,
        augment="default",
        device=str(device),
        model="unet3d",
        task=TASK["unet3d"],
    )
    # the loaders first, one (workers, mode) at a time, each saved as it comes
    for mode in config.modes:
        for w in config.workers:
            row: dict[str, Any] = {"workers": w, "mode": mode}
            if time.time() > deadline - 40:
                row["error"] = "skipped: out of time"
            else:
                try:
                    row = measure(config, w, mode, device).to_json()
                except Exception as err:  # shared memory too small, a worker died: go on
                    row["error"] = _error(err)
            result["loader"].append(row)
            save(result)
    for model, task in TASK.items():
        steps, warmup = (2, 1) if dry else (10, 3)
        try:
            trainer = trainer_rate(
                replace(config, model=model, task=task), device, steps=steps, warmup=warmup
            )
        except Exception as err:
            result["trainers"][model] = {"error": _error(err)}
            continue
        result["trainers"][model] = trainer
        for row in result["loader"]:
            if "samples_per_s" in row:
                rate = row["samples_per_s"]["median"] / trainer["samples_per_s"]
                row.setdefault("busy", {})[model] = min(1.0, rate)
        save(result)
    alone = result["trainers"].get("unet3d", {}).get("samples_per_s")
    for mode in ("gpu", "cpu"):
        row = {"model": "unet3d", "workers": max(workers), "mode": mode}
        if alone is None or time.time() > deadline - 25:
            row["error"] = "skipped: out of time" if alone else "no unet3d trainer rate"
        else:
            try:
                rate = fed_rate(config, max(workers), mode, device, steps=2 if dry else 30)
                row.update(samples_per_s=rate, trainer_alone=alone, busy=min(1.0, rate / alone))
            except Exception as err:
                row["error"] = _error(err)
        result["fed"].append(row)
        save(result)
    result["targets"] = feed_targets(result)
    save(result)


def feed_targets(result: dict[str, Any]) -> list[str]:
    out = []
    for row in result.get("fed", []):
        if "busy" in row and row["mode"] == "gpu":
            met = "met" if row["busy"] >= TARGET_BUSY else "MISSED"
            out.append(
                f"unet3d fed by {row['workers']} workers with GPU augmentation: busy "
                f"{100 * row['busy']:.0f}% (target {100 * TARGET_BUSY:.0f}%): {met}"
            )
    return out


def render_feed(data: dict[str, Any]) -> list[str]:
    d = data.get("data", {})
    lines = [
        f"{d.get('samples')} synthetic nuclei, {d.get('crop')}^3 crops, preset "
        f"{d.get('preset')!r}, batch {d.get('batch')}; made in "
        f"{d.get('seconds_to_make', 0):.0f} s.",
        "",
    ]
    trainers = data.get("trainers", {})
    lines += _table(
        ["trainer (bf16, resident batch)", "samples/s", "step ms"],
        [
            [k, f"{v['samples_per_s']:.0f}", f"{v['step_ms']:.1f}"]
            if "samples_per_s" in v
            else [k, v.get("error"), ""]
            for k, v in trainers.items()
        ],
    )
    lines.append("")
    names = list(trainers)
    rows = []
    for r in data.get("loader", []):
        if "error" in r:
            rows.append([r["workers"], r["mode"], r["error"], "", *[""] * len(names)])
            continue
        rows.append(
            [
                r["workers"],
                r["mode"],
                f"{r['samples_per_s']['median']:.0f}",
                " / ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items()),
                *[f"{100 * r['busy'][n]:.0f}%" if n in r.get("busy", {}) else "" for n in names],
            ]
        )
    lines += _table(
        [
            "workers",
            "augment",
            "loader samples/s",
            "stage ms a sample",
            *[f"{n} busy" for n in names],
        ],
        rows,
    )
    lines.append("")
    rows = [
        [r.get("workers"), r.get("mode"), f"{r['samples_per_s']:.0f}", f"{100 * r['busy']:.0f}%"]
        if "busy" in r
        else [r.get("workers"), r.get("mode"), r.get("error"), ""]
        for r in data.get("fed", [])
    ]
    lines += _table(["unet3d fed: workers", "augment", "samples/s", "busy"], rows)
    lines += ["", *[f"- {t}" for t in data.get("targets", [])]]
    return lines


RUNNERS = {
    "tests": section_tests,
    "routes": section_routes,
    "augment": section_augment,
    "feed": section_feed,
}
RENDER = {
    "tests": render_tests,
    "routes": render_routes,
    "augment": render_augment,
    "feed": render_feed,
}


# --- driver -------------------------------------------------------------------------------------


def run_child(name: str, out: Path, deadline: float, dry: bool, scratch: Path) -> None:
    """One section in this process, its results saved to ``out/<name>.json`` as they come."""
    path = out / f"{name}.json"
    RUNNERS[name](out, deadline, lambda data: _atomic_json(path, data), dry, scratch)


def run_section(name: str, out: Path, limit: float, dry: bool) -> dict[str, Any]:
    """Run section ``name`` in a child process for at most ``limit`` seconds (its whole process
    group is killed after that) and collect what it saved."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"streamvol-device-{name}-"))
    cmd = [sys.executable, __file__, "--out", str(out), "--child", name, "--scratch", str(scratch)]
    cmd += ["--deadline", str(time.time() + limit - 5)] + (["--dry-run"] if dry else [])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = f"exit {proc.wait(timeout=limit)}"
        except subprocess.TimeoutExpired:
            status = "timed out"
        finally:  # the section's own children too (loader workers, pytest's)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            shutil.rmtree(scratch, ignore_errors=True)
    section: dict[str, Any] = {"status": status, "seconds": time.perf_counter() - started}
    if status == "exit 0":
        section["status"] = "ok"
    if path.exists():
        section["results"] = json.loads(path.read_text())
    log_text = (out / f"{name}.log").read_text(errors="replace")
    if section["status"] != "ok":
        section["log_tail"] = log_text[-3000:]
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for device.json, device.md, logs")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--dry-run", action="store_true", help="the sections on the CPU, tiny")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_child(args.child, out, args.deadline, args.dry_run, args.scratch)
        return 0
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections {','.join(unknown)}: expected some of {', '.join(SECTIONS)}")
    report: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", "benchmarks/device.py", *sys.argv[1:]]),
        "machine": machine(),
        "sections": {},
    }
    if not report["cuda"] and not args.dry_run:
        report["skipped"] = [f"{name}: {SECTIONS[name][0]}" for name in names]
        report["reason"] = "no CUDA device (torch.cuda.is_available() is False)"
        write(out, report)
        print(f"no CUDA device: skipped {', '.join(names)}; wrote {out / 'device.json'}")
        return 0
    started = time.perf_counter()
    scale = args.budget / sum(SECTIONS[n][1] for n in names)
    for name in names:
        left = args.budget - (time.perf_counter() - started)
        limit = min(SECTIONS[name][1] * scale, left)
        if limit < 15:
            report["sections"][name] = {"status": "skipped: out of time", "seconds": 0.0}
            write(out, report)
            continue
        print(f"{name}: up to {limit:.0f} s ...", flush=True)
        report["sections"][name] = run_section(name, out, limit, args.dry_run)
        report["seconds"] = time.perf_counter() - started
        write(out, report)
        print(f"{name}: {report['sections'][name]['status']}", flush=True)
    print(f"wrote {out / 'device.json'} and {out / 'device.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
