"""Sliding-window inference speed and memory of the default detection U-Net (a benchmark, not a
test).

The model is what ``streamvol train --task detection --model unet3d`` builds without width or
depth options: ``unet3d`` (base width 32, depth 3, batch norm) with 7 outputs (background and the
six CZII types), random weights (speed does not depend on them). Windows of 96^3 (the CZII
winners' patch), overlap 0.25, Gaussian blending, no TTA, float32 on the CPU.

Each runs as ``predict`` does, with freed memory kept in the process
(``streamvol.core.heap.keep_freed_memory``), and, for comparison, with glibc's defaults.

- Speed: one float32 volume of ``--shape`` through ``sliding_window``, at each ``--threads``
  (``torch.set_num_threads``), in a fresh subprocess each; output voxels per second, windows per
  second, and the extrapolated time of one 184 x 630 x 630 tomogram.
- Memory: peak RSS of a fresh subprocess taking a 184 x 630 x 630 float32 tomogram through
  everything ``predict`` does with it: normalise, the sliding window (accumulators for the six
  types and the weights), and NMS peaks of every type. The U-Net runs on the last
  ``--memory-batches`` batches of windows; the earlier ones return zeros (still added into the
  accumulators, so every page of them is resident by then), so the run takes a minute, not
  the better part of an hour on 2 cores. What a window costs in memory does not depend on
  which window it is, so the peak is that of the full run.

    python benchmarks/predict.py [--threads 1,2] [--shape 96,240,240] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from _results import add_out, publish

TOMOGRAM = (184, 630, 630)
PATCH = (96, 96, 96)


def _model():
    import torch

    from streamvol import models

    torch.manual_seed(0)
    return models.build("unet3d", num_classes=7).eval()


def _predict_fn(model, skip: int = 0):
    """Per-type probabilities (softmax without the background), as ``Predictor`` makes them;
    zeros for the first ``skip`` batches."""
    import torch

    calls = [0]

    def predict(x):
        calls[0] += 1
        if calls[0] <= skip:
            return torch.zeros((x.shape[0], 6, *x.shape[2:]))
        return torch.softmax(model(x), dim=1)[:, 1:]

    return predict


def _setup(threads: int, kept: bool) -> None:
    import torch

    from streamvol.core.heap import keep_freed_memory

    if kept:
        keep_freed_memory("steps")  # as predict does on the CPU
    torch.set_num_threads(threads)


def speed(threads: int, shape: tuple[int, int, int], batch: int, kept: bool = True) -> dict:
    import numpy as np
    import torch

    from streamvol.predict import Window, count_windows, sliding_window

    _setup(threads, kept)
    model = _model()
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    window = Window(patch=PATCH, overlap=0.25, batch_size=batch)
    with torch.no_grad():  # warm up: first-call allocations and kernel choices
        model(torch.zeros((1, 1, *PATCH)))
    started = time.perf_counter()
    sliding_window(volume, _predict_fn(model), 6, window)
    seconds = time.perf_counter() - started
    windows = count_windows(shape, window)
    per_window = seconds / windows
    return {
        "threads": threads,
        "kept": kept,
        "shape": list(shape),
        "windows": windows,
        "seconds": seconds,
        "voxels_per_s": float(np.prod(shape)) / seconds,
        "windows_per_s": windows / seconds,
        "tomogram_windows": count_windows(TOMOGRAM, window),
        "tomogram_minutes": count_windows(TOMOGRAM, window) * per_window / 60,
    }


def memory(threads: int, batches: int, batch: int, kept: bool = True) -> dict:
    import resource

    import numpy as np

    from streamvol.predict import Window, count_windows, find_peaks, sliding_window

    _setup(threads, kept)
    model = _model()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    volume = np.random.default_rng(0).normal(size=TOMOGRAM).astype(np.float32)
    volume -= volume.mean()
    volume /= volume.std()
    started = time.perf_counter()
    window = Window(patch=PATCH, overlap=0.25, batch_size=batch)
    total = -(-count_windows(TOMOGRAM, window) // batch)
    probs = sliding_window(volume, _predict_fn(model, skip=total - batches), 6, window)
    del volume
    for k in range(6):
        find_peaks(probs[k], 0.5, 3.0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    voxels = float(np.prod(TOMOGRAM))
    return {
        "threads": threads,
        "batch": batch,
        "model_batches": batches,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "before_mb": base,
        "volume_mb": voxels * 4 / 2**20,
        "accumulators_mb": voxels * 4 * 6 / 2**20,
    }


def _child(kind: str, **kwargs) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import predict as b; "
        f"print(json.dumps(b.{kind}(**{kwargs!r})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(kwargs["threads"])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--shape", default="96,240,240")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--memory-batches", type=int, default=4)
    add_out(parser)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    threads = [int(t) for t in args.threads.split(",")]
    load_before = _load()
    rows = [_child("speed", threads=t, shape=shape, batch=args.batch) for t in threads]
    rows.append(_child("speed", threads=threads[-1], shape=shape, batch=args.batch, kept=False))
    mem, default = (
        _child("memory", threads=threads[-1], batches=args.memory_batches, batch=args.batch, kept=k)
        for k in (True, False)
    )
    load_after = _load()
    import numpy
    import torch

    lines = [
        f"## Sliding-window inference: default detection U-Net, voxels/s and peak RSS "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} vCPU, no GPU, shared with other "
        f"engineers' jobs while measured (1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after); Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {numpy.__version__}. `python benchmarks/predict.py --threads {args.threads} "
        f"--shape {args.shape} --batch {args.batch} --memory-batches {args.memory_batches}`: "
        "unet3d (width 32, depth 3, 7 outputs), 96^3 windows, overlap 0.25, Gaussian blending, "
        "no TTA, float32; each row a fresh subprocess.",
        "",
        "| threads | freed memory | volume | windows | seconds | output voxels/s | windows/s | "
        "184x630x630 tomogram (243 windows), extrapolated |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {'kept' if r['kept'] else 'glibc defaults'} | "
            f"{'x'.join(map(str, r['shape']))} | {r['windows']} | "
            f"{r['seconds']:.1f} | {r['voxels_per_s']:,.0f} | {r['windows_per_s']:.3f} | "
            f"{r['tomogram_minutes']:.1f} min |"
        )
    lines += [
        "",
        f"Peak memory, one 184x630x630 float32 tomogram ({mem['volume_mb']:.0f} MB) through "
        f"normalising, the sliding window and NMS peaks of all six types, {mem['threads']} "
        f"threads, the U-Net computed on the last {mem['model_batches']} window batches (see "
        f"the script's docstring): peak RSS {mem['peak_rss_mb']:,.0f} MB, of which "
        f"{mem['before_mb']:,.0f} MB before the volume (Python, torch, the model), the volume "
        f"{mem['volume_mb']:,.0f} MB and the accumulators (one float32 volume per type) "
        f"{mem['accumulators_mb']:,.0f} MB; {mem['seconds']:.0f} s. With glibc's defaults: "
        f"{default['peak_rss_mb']:,.0f} MB, {default['seconds']:.0f} s.",
        "",
    ]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
