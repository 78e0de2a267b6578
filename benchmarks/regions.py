"""Region shards against the points plan on the same tomograms (a benchmark, not a test).

Data: ``streamvol synth tomograms --n 2 --size 96,256,256`` (two float32 OME-Zarr tomograms,
53 MB, copick picks). Both sets: 64^3 crops, one crop per pick plus one negative per pick, the
``default`` augmentation's margin (free rotation + shift + zoom).

- bytes on disk, against the sources' bytes at the same dtype (target for regions: <= 1.1x);
- sharding MB/s (source bytes over wall time) against reading the sources once with dask
  (target for regions: >= 0.5x the read-only MB/s), medians of interleaved repeats for regions
  (the points plan, 96x the bytes, is sharded once);
- the loader at 2 workers, free rotation, page cache warm, batch 16: samples/s of regions
  against the points plan (target: >= 90%), median of interleaved repeats.

    python benchmarks/regions.py [--size 96,256,256] [--repeats 3] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _results import add_out, publish


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.tar"))


def shard_once(data: Path, out: Path, plan: str, crop: int) -> float:
    from streamvol.shard import parse_config, shard

    config = parse_config([data], plan=plan, crop=crop, negatives=1, split="1", shard_size=64)
    started = time.perf_counter()
    shard(config, out, workers=2)
    return time.perf_counter() - started


def read_once(data: Path) -> tuple[float, int]:
    """Seconds to read every tomogram once (dask, 2 threads), and their bytes."""
    import dask

    from streamvol.io import discover, open_volume

    volumes = [open_volume(s.image) for s in discover(data).sources]
    started = time.perf_counter()
    dask.compute(*[v.data.sum() for v in volumes], scheduler="threads", num_workers=2)
    return time.perf_counter() - started, sum(v.data.nbytes for v in volumes)


def loader_rate(shards: Path, workers: int, batch: int) -> float:
    """Samples/s of one epoch (after its first batches), CPU augmentation with free rotation."""
    import streamvol
    from streamvol.augment import Augment

    ds = streamvol.open_shards(shards, augment=Augment.preset("default"))
    dl = streamvol.loader(ds, batch_size=batch, num_workers=workers, persistent_workers=False)
    started, seen = None, 0
    for i, b in enumerate(dl):
        if i == 2 * max(workers, 1):
            started, seen = time.perf_counter(), 0
        seen += len(b["__key__"])
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="96,256,256")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    add_out(parser)
    args = parser.parse_args()

    import torch

    from streamvol import synth

    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synth.make("tomograms", root / "data", n=2, size=size, seed=0)
        _, source_bytes = read_once(data)  # warm the page cache: what the sharder reads from
        rows = {"points": {"seconds": shard_once(data, root / "points", "points", args.crop)}}
        reads, writes = [], []  # interleaved: both see the same machine
        for i in range(args.repeats):
            reads.append(read_once(data)[0])
            writes.append(shard_once(data, root / f"regions-{i}", "regions", args.crop))
        (root / f"regions-{args.repeats - 1}").rename(root / "regions")
        read_s = statistics.median(reads)
        rows["regions"] = {"seconds": statistics.median(writes)}
        for plan, row in rows.items():
            row["bytes"] = folder_bytes(root / plan)
        rates: dict[str, list[float]] = {"points": [], "regions": []}
        loader_rate(root / "regions", 2, 16)  # warm the page cache and numba
        loader_rate(root / "points", 2, 16)
        for _ in range(args.repeats):
            for plan in ("points", "regions"):
                rates[plan].append(loader_rate(root / plan, 2, 16))

    read_mb_s = source_bytes / 1e6 / read_s
    lines = [
        "",
        f"## Region shards against the points plan ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs, no GPU. Data: `streamvol synth tomograms --n 2 "
        f"--size {args.size}` ({source_bytes / 1e6:.0f} MB of float32 tomograms), "
        f"{args.crop}^3 crops, one per pick plus one negative per pick, the `default` "
        "augmentation's margin; loader: 2 workers, batch 16, free rotation + flips + noise on "
        "the CPU, page cache warm. The read-only pass and the regions sharder, and the two "
        f"loaders, are medians of {args.repeats} interleaved repeats; the points plan is "
        "sharded once (`python benchmarks/regions.py`).",
        "",
        "| plan | bytes on disk | x source | shard MB/s | x read-only | loader samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for plan, row in rows.items():
        mb_s = source_bytes / 1e6 / row["seconds"]
        lines.append(
            f"| {plan} | {row['bytes'] / 1e6:,.1f} MB | {row['bytes'] / source_bytes:.2f} | "
            f"{mb_s:.1f} | {mb_s / read_mb_s:.2f} | {statistics.median(rates[plan]):.0f} "
            f"({min(rates[plan]):.0f}-{max(rates[plan]):.0f}) |"
        )
    ratio = statistics.median(rates["regions"]) / statistics.median(rates["points"])
    lines += [
        "",
        f"Reading the sources once: {read_mb_s:.0f} MB/s. Regions / points loader: "
        f"{ratio:.0%} (target 90%); regions bytes / source: "
        f"{rows['regions']['bytes'] / source_bytes:.2f} (target 1.1); regions shard / read: "
        f"{source_bytes / 1e6 / rows['regions']['seconds'] / read_mb_s:.2f} (target 0.5).",
    ]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
