"""What checking every member's checksum on read costs the loader (a benchmark).

Three parts, on the data ``benchmarks/loaders.py`` uses (synthetic nuclei, ``--size`` cubes of
uint16, sharded with ``--plan sample`` and ``--context auto`` for the loaders benchmark's
rotate + flip + noise spec, so each stored block is (size + 2 x margin)^3):

1. The checksum functions on the stored members, read from the memory-mapped tars in the page
   cache (the loader's path): ``zlib.crc32`` (stdlib), ``google_crc32c.value`` and
   ``xxhash.xxh3_64`` where installed. Each member is hashed once per pass, every member of the
   set in turn (a set larger than the CPU's caches), best of ``--repeats`` passes.
2. The loader, one process (``open_shards`` iterated directly, 0 workers), with
   ``verify=True`` and ``verify=False``: per sample, the read + decode stage (``__t_read__``:
   seek, tar headers, member views, checksums, ``.npy`` headers), the prepare stage
   (``__t_prep__``: the reading-only centre crop and normalisation, or the CPU augmentation),
   the wall time and the process's CPU time per sample. Passes alternate between the two
   settings so a load change on a shared machine hits both alike; medians over ``--repeats``.
3. ``streamvol.loader`` samples/s at 0 and 2 workers as ``benchmarks/loaders.py`` times it.

    python benchmarks/checksums.py [--samples 64] [--size 64] [--repeats 7] [--out RESULTS.md]
                                   [--no-throughput]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _results import add_out, append  # noqa: E402

HERE = Path(__file__).resolve().parent


def hashers() -> dict[str, Callable[[np.ndarray], Any]]:
    found: dict[str, Callable[[np.ndarray], Any]] = {"zlib.crc32": zlib.crc32}
    try:
        import google_crc32c

        found["google_crc32c.value"] = google_crc32c.value
    except ImportError:
        pass
    try:
        import xxhash

        found["xxhash.xxh3_64"] = xxhash.xxh3_64_intdigest
    except ImportError:
        pass
    return found


def members(folder: Path) -> list[np.ndarray]:
    """Every ``image.npy`` member of the set, as views of the memory-mapped tars."""
    from streamvol.stream.decode import MappedFile, read_members

    out = []
    for tar in sorted(folder.glob("*.tar")):
        f = MappedFile(tar)
        out += [data for name, data in read_members(f, str(tar)) if name.endswith(".npy")]
    return out


def hash_speeds(folder: Path, repeats: int) -> list[str]:
    views = members(folder)
    size = views[0].nbytes
    lines = [
        f"| function | ms per {size / 1e6:.1f} MB member | GB/s |",
        "| --- | ---: | ---: |",
    ]
    for name, fn in hashers().items():
        for v in views:  # fault the pages in once: the loader's map is fresh, but warm
            fn(v)
        best = min(_timed(lambda fn=fn: [fn(v) for v in views]) for _ in range(repeats))
        per = best / len(views)
        lines.append(f"| `{name}` | {per * 1e3:.3f} | {size / per / 1e9:.1f} |")
    return lines


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def loader_pass(folder: Path, verify: bool, augment: Any) -> tuple[float, float, float, float]:
    """(read + decode, prepare, wall, CPU) seconds per sample over one pass of the set; the CPU
    time (user + system, page faults included) is what other jobs on a shared machine disturb
    least."""
    from streamvol.stream import open_shards

    ds = open_shards(folder, augment=augment, verify=verify, seed=0)
    read = prep = 0.0
    n = 0
    started, cpu = time.perf_counter(), time.process_time()
    for sample in ds:
        read += sample["__t_read__"]
        prep += sample["__t_prep__"]
        n += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return read / n, prep / n, wall / n, cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    add_out(parser)
    parser.add_argument(
        "--no-throughput", action="store_true", help="skip the streamvol.loader samples/s part"
    )
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(HERE))
    from _loaders.data import prepare  # the loaders benchmark's data
    from _loaders.workload import augment_spec, single_thread

    single_thread()
    with tempfile.TemporaryDirectory(prefix="streamvol-checksums-") as tmp:
        data = prepare(Path(tmp), args.samples, args.size)
        block = data.size + 2 * data.margin[0]
        lines = [
            f"## Member checksums: their cost on every read ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {os.cpu_count()} vCPU, {platform.processor() or platform.machine()}, "
            f"{platform.platform()}; Python {platform.python_version()}, numpy "
            f"{np.__version__}. Load average before: "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
            f"Data: {args.samples} synthetic nuclei, {data.size}^3 uint16, stored with margin "
            f"{data.margin[0]} ({block}^3, {block**3 * 2 / 1e6:.1f} MB a member), all in the "
            "page cache. Command: `python benchmarks/checksums.py "
            f"--samples {args.samples} --size {args.size} --repeats {args.repeats}`.",
            "",
            "Checksum functions on the members, memory-mapped from the tars (best of "
            f"{args.repeats} passes over all {args.samples}):",
            "",
            *hash_speeds(data.shards, args.repeats),
            "",
        ]
        print("\n".join(lines), flush=True)
        modes = {"read only (centre crop, normalise)": None, "CPU augmentation": augment_spec()}
        for augment in modes.values():  # warm-up: numba, page cache
            loader_pass(data.shards, True, augment)
        runs: dict[tuple[str, bool], list[tuple[float, float, float, float]]] = {}
        for _ in range(args.repeats):
            for mode, augment in modes.items():
                for verify in (True, False):
                    runs.setdefault((mode, verify), []).append(
                        loader_pass(data.shards, verify, augment)
                    )
        table = [
            "Loader, 0 workers, per sample (medians of "
            f"{args.repeats} interleaved passes over {args.samples} samples):",
            "",
            "| stage | checksums | read + decode ms | prepare ms | wall ms | CPU ms | "
            "cost: wall | cost: CPU |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode in modes:
            med = {
                v: [statistics.median(x[i] for x in runs[(mode, v)]) for i in range(4)]
                for v in (True, False)
            }
            for v in (False, True):
                read, prep, wall, cpu = med[v]
                base = med[False]
                costs = (
                    f"{100 * (wall / base[2] - 1):+.1f}% | {100 * (cpu / base[3] - 1):+.1f}%"
                    if v
                    else "(baseline) | (baseline)"
                )
                table.append(
                    f"| {mode} | {'on' if v else 'off'} | {read * 1e3:.3f} | {prep * 1e3:.3f} "
                    f"| {wall * 1e3:.3f} | {cpu * 1e3:.3f} | {costs} |"
                )
        print("\n".join(table), flush=True)
        if not args.no_throughput:
            table += ["", *throughput(data, args.repeats)]
            print("\n".join(table[-8:]), flush=True)
        append("\n".join(lines + table), args.out)


def throughput(data: Any, repeats: int) -> list[str]:
    """samples/s of ``streamvol.loader`` as ``benchmarks/loaders.py`` measures it (its ``Case``
    and interleaved rounds), with and without member checksums."""
    from _loaders.cases import Case, measure
    from _loaders.workload import BATCH, augment_spec

    import streamvol

    def make(verify: bool, augment: Any, workers: int) -> Any:
        ds = streamvol.open_shards(data.shards, augment=augment, verify=verify)
        return streamvol.loader(ds, BATCH, workers)

    cases = [
        Case(
            group,
            f"{group} verify={verify}",
            w,
            lambda v=verify, a=aug, w=w: make(v, a, w),
            lambda b: len(b["image"]),
        )
        for w in (0, 2)
        for group, aug in (("augment", augment_spec()), ("read", None))
        for verify in (False, True)
    ]
    batches = max(1, len(data.npy) // BATCH)  # one epoch's worth, as loaders.py times
    measure(cases, batches, repeats, log=lambda m: print(m, flush=True))
    lines = [
        f"`streamvol.loader` as in `benchmarks/loaders.py` (batch {BATCH}, {batches} batches "
        f"timed per repeat, median of {repeats} interleaved repeats), samples/s:",
        "",
        "| workers | loader | checksums off | checksums on | cost |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for w in (0, 2):
        for group in ("augment", "read"):
            off, on = (
                next(c for c in cases if c.workers == w and c.name == f"{group} verify={v}")
                for v in (False, True)
            )
            lines.append(
                f"| {w} | {'CPU augmentation' if group == 'augment' else 'read only'} | "
                f"{off.median:.1f} | {on.median:.1f} | "
                f"{100 * (off.median / on.median - 1):+.1f}% time a sample |"
            )
    return lines


if __name__ == "__main__":
    main()
