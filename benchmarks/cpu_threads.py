"""CPU training beside loader workers: torch threads left at their default, or one thread a
core left to each worker (a benchmark, not a test).

``Trainer.fit`` once set torch to ``cores - workers`` threads on the CPU, so that busy workers
would not stall torch's OpenMP threads. This measures whether that pays, on three runs:

- ``picking``: the picking demo's training (``streamvol demo --tomograms``: unet3d width 16,
  depth 3, 16^3 crops drawn from regions, 1 worker), whole epochs with their validation;
- ``spots``: the demo's spot classifier (simple_cnn, 9 x 11 x 11 crops, 2 workers, loader-bound);
- ``se_resnet3d``: 48^3 crops of synthetic tomograms (points plan, default augmentation, 2
  workers), model-bound, as the README's realistic sizes are.

Each is timed with torch at 1 thread and at the default, interleaved, ``--repeats`` times:
seconds per training batch after the first (the first holds the workers' start), and for
``picking`` seconds per epoch with its whole-tomogram validation.

    python benchmarks/cpu_threads.py [--repeats 2] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import add_out, publish

CASES = ("picking", "spots", "se_resnet3d")


def make_data(root: Path) -> dict[str, Path]:
    from streamvol import synth
    from streamvol.demo import PICK_RUNS, PICK_SHARDS
    from streamvol.shard import parse_config, shard

    sets = {}
    synth.make("tomograms", root / "tomo", n=PICK_RUNS, seed=0, overwrite=True)
    sets["picking"] = root / "s_picking"
    shard(parse_config([root / "tomo"], seed=0, **PICK_SHARDS), sets["picking"], workers=2)
    synth.make("spots", root / "spots", n=600, seed=0, overwrite=True)
    sets["spots"] = root / "s_spots"
    spots = {"crop": "9,11,11", "split": "0.7,0.15,0.15", "shard_size": 64, "augment": "cryoet"}
    shard(parse_config([root / "spots"], plan="points", **spots), sets["spots"], workers=2)
    synth.make("tomograms", root / "big", n=4, size=(96, 192, 192), seed=0, overwrite=True)
    sets["se_resnet3d"] = root / "s_big"
    big = parse_config([root / "big"], plan="points", crop=48, split="0.5,0.25,0.25")
    shard(big, sets["se_resnet3d"], workers=2)
    return sets


def run_case(case: str, shards: Path, threads: int | None) -> dict[str, float]:
    """One timing in this process: ``threads`` torch threads (None: the default)."""
    import torch

    from streamvol.demo import PICK_TRAIN, TRAIN
    from streamvol.train import TrainConfig, Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    if case == "picking":
        options = {**PICK_TRAIN, "epochs": 3, "workers": 1}
    elif case == "spots":
        options = {**TRAIN, "epochs": 2, "workers": 2, "val_split": ""}
    else:
        options = {"model": "se_resnet3d", "epochs": 1, "workers": 2, "val_split": ""}
    config = TrainConfig(shards=str(shards), seed=0, **options)
    trainer = Trainer(config, tempfile.mkdtemp())
    stamps: list[float] = []
    epochs: list[float] = []

    def note(done: int, total: int) -> None:
        if done:
            stamps.append(time.perf_counter())

    epoch_batches: list[float] = []
    for _ in range(config.epochs):
        stamps.clear()
        started = time.perf_counter()
        trainer.train_epoch(note)
        if case == "picking":
            trainer.validate()
        epochs.append(time.perf_counter() - started)
        epoch_batches.extend(b - a for a, b in itertools.pairwise(stamps))
        trainer.epoch += 1
    return {
        "threads": torch.get_num_threads(),
        "s_per_batch": statistics.median(epoch_batches),
        "s_per_epoch": statistics.median(epochs[1:] or epochs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    add_out(parser)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # case shards threads
    args = parser.parse_args()
    if args.one:
        case, shards, threads = args.one
        print(json.dumps(run_case(case, Path(shards), None if threads == "0" else int(threads))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_data(Path(tmp))
        rows: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeats):
            for case in CASES:
                for threads in ("1", "0"):  # each run in a fresh process, as `train` is
                    done = subprocess.run(
                        [sys.executable, __file__, "--one", case, str(sets[case]), threads],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    rows.setdefault((case, threads), []).append(result)
                    print(case, threads, result, flush=True)
    lines = [
        f"## CPU training beside loader workers: torch threads ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU. Median of "
        f"{args.repeats} interleaved runs, each in its own process "
        "(`python benchmarks/cpu_threads.py`).",
        "",
        "| run | torch threads | s a batch | s an epoch (picking: with validation) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for case in CASES:
        for threads in ("1", "0"):
            got = rows[(case, threads)]
            batch = statistics.median(r["s_per_batch"] for r in got)
            epoch = statistics.median(r["s_per_epoch"] for r in got)
            label = "1" if threads == "1" else f"{int(got[0]['threads'])} (default)"
            lines.append(f"| {case} | {label} | {batch:.3f} | {epoch:.2f} |")
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
