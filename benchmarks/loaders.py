"""Loader throughput: streamvol against a seed-style loader, MONAI and TorchIO (a benchmark).

Every loader reads the same synthetic crops and does the same free rotation + flips + noise
(or, in the reading-only group, none), with the same batch size and workers; the bare streamvol
kernel is timed beside them. The run prints its figures (a section with the machine, the
settings and the tables); ``--out benchmarks/RESULTS.md --json benchmarks/loaders.json --plot
benchmarks/loaders.png`` records them, every measurement and a bar chart. What each loader is
set up to do, how the timing works and the targets are written in ``RESULTS.md`` ("The loaders
benchmark"); the parts are in ``benchmarks/_loaders/``. ``benchmarks/checksums.py`` reuses
them.

    python benchmarks/loaders.py [--samples 96] [--size 64] [--workers 0,2] [--repeats 3]
                                 [--out RESULTS.md] [--json loaders.json] [--plot loaders.png]
                                 [--quick]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from _loaders.cases import cases, measure  # noqa: E402
from _loaders.data import prepare  # noqa: E402
from _loaders.figures import markdown, plot, results_json, settings, versions  # noqa: E402
from _loaders.kernel import load_blocks  # noqa: E402
from _loaders.workload import BATCH, single_thread  # noqa: E402
from _results import add_out, publish  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--size", type=int, default=64, help="crop side (voxels)")
    parser.add_argument("--workers", default="0,2", help="DataLoader workers, e.g. 0,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--batches", type=int, help="batches per repeat (default: one epoch)")
    add_out(parser)
    parser.add_argument("--json", help="measurements (benchmarks/loaders.json records them)")
    parser.add_argument("--plot", help="bar chart PNG (benchmarks/loaders.png records it)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run: a few samples of 24^3, one repeat, two batches",
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.size, args.repeats = min(args.samples, 16), min(args.size, 24), 1
        args.batches = args.batches or 2
    workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    batches = args.batches or max(1, args.samples // args.batch_size)
    log = lambda text: print(text, flush=True)  # noqa: E731
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    single_thread()
    v = versions()  # before measuring: a broken import fails now, not after minutes
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="streamvol-loaders-") as tmp:
        data = prepare(Path(tmp), args.samples, args.size)
        log(f"data: {args.samples} samples of {args.size}^3 in {data.seconds:.0f} s")
        load_blocks(data.shards, args.size, limit=2, norm=(data.mean, 1.0 / data.std))
        all_cases = cases(data, workers, args.batch_size)
        measure(all_cases, batches, args.repeats, log)
        seconds = time.perf_counter() - started
        load = (load_before, os.getloadavg())
        config = settings(data, args, workers, batches)
    chart = Path(args.plot).name if args.plot else None
    lines = markdown(all_cases, config, workers, seconds, load, v, chart)
    publish("\n".join(lines), args.out)
    if args.json:
        Path(args.json).write_text(
            json.dumps(results_json(all_cases, config, seconds, load, v), indent=2)
        )
        log(f"measurements: {args.json}")
    if args.plot:
        plot(all_cases, workers, args.size, Path(args.plot))
        log(f"chart: {args.plot}")


if __name__ == "__main__":
    main()
