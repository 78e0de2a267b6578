"""Sharding throughput and peak memory against volume size (a benchmark, not a test).

For one float32 volume at 1x, 4x and 16x a base size, in each of OME-Zarr, multi-page TIFF and
.npy, measure: reading the whole source once with dask (the floor), and `streamvol shard`
(grid plan, 64^3 crops with the free-rotation margin). Each run is a fresh subprocess so its
peak RSS is its own. The target: flat peak memory across sizes, and MB/s within 2x of reading
the source alone.

    python benchmarks/shard.py [--base 64,256,256] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import add_out, publish

SCALES = {1: (1, 1, 1), 4: (1, 2, 2), 16: (4, 2, 2)}  # volume scale -> growth per axis
FORMATS = ("ome-zarr", "tiff", "npy")


def make_volume(path: Path, fmt: str, shape: tuple[int, int, int]) -> Path:
    """Write a random float32 volume slab by slab (never whole in memory)."""
    import tifffile
    import zarr

    rng = np.random.default_rng(0)
    slab = 16
    if fmt == "npy":
        target = path / "vol.npy"
        mm = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape)
        for z in range(0, shape[0], slab):
            mm[z : z + slab] = rng.normal(size=mm[z : z + slab].shape)
        mm.flush()
        return target
    if fmt == "tiff":
        target = path / "vol.tif"
        with tifffile.TiffWriter(target, bigtiff=True) as tif:
            for _ in range(shape[0]):
                tif.write(rng.normal(size=shape[1:]).astype(np.float32), contiguous=True)
        return target
    target = path / "vol.zarr"
    group = zarr.open_group(target, mode="w", zarr_format=2)
    array = group.create_array("0", shape=shape, chunks=(64, 64, 64), dtype="float32")
    for z in range(0, shape[0], slab):
        array[z : z + slab] = rng.normal(size=(min(slab, shape[0] - z), *shape[1:]))
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10] * 3}]}
            ],
        }
    ]
    return target


def child(mode: str, source: str, out: str) -> dict:
    """Run inside a fresh process: read or shard, report seconds and peak RSS."""
    import dask

    from streamvol.io import open_volume
    from streamvol.shard import parse_config, shard
    from streamvol.shard.plan import rotation_margin

    started = time.perf_counter()
    if mode == "read":
        volume = open_volume(source)
        dask.compute(volume.data.sum(), scheduler="threads", num_workers=2)
    else:
        margin = rotation_margin(64)[0]  # free rotation only: 24 voxels a side
        config = parse_config([source], crop=64, context=margin, split="1", shard_size=32)
        shard(config, out, workers=2)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process' peak RSS: VmHWM belongs to the process image (ru_maxrss survives exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(mode: str, source: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="64,128,256", help="z,y,x of the 1x volume")
    add_out(parser)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    base = tuple(int(v) for v in args.base.split(","))
    rows = []
    for fmt in FORMATS:
        for scale, growth in SCALES.items():
            shape = tuple(b * g for b, g in zip(base, growth, strict=True))
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                source = make_volume(tmp, fmt, shape)
                mb = np.prod(shape) * 4 / 1e6
                read = measure("read", source, tmp / "unused")
                write = measure("shard", source, tmp / "shards")
                out_mb = sum(p.stat().st_size for p in (tmp / "shards").glob("*.tar")) / 1e6
            rows.append(
                {
                    "format": fmt,
                    "scale": scale,
                    "shape": shape,
                    "source_mb": mb,
                    "read_mb_s": mb / read["seconds"],
                    "shard_mb_s": mb / write["seconds"],
                    "shard_out_mb": out_mb,
                    "read_rss_mb": read["peak_rss_mb"],
                    "shard_rss_mb": write["peak_rss_mb"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    publish(report(rows), args.out)


def report(rows: list[dict]) -> str:
    """The table, with machine information."""
    import dask
    import zarr

    lines = [
        "",
        f"## Sharding: MB/s and peak RSS against volume size ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}, dask {dask.__version__}, zarr {zarr.__version__}. "
        "Grid plan, 64^3 crops + 24-voxel free-rotation margin (112^3 stored, float32), "
        "2 dask threads, 32 samples per shard. Source MB/s = source bytes / seconds; "
        "the shards hold more bytes than the source because the margins overlap.",
        "",
        "| format | scale | shape | source MB | read MB/s | shard MB/s | shard/read | "
        "shards written MB/s | read peak RSS MB | shard peak RSS MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['scale']}x | {'x'.join(map(str, r['shape']))} | "
            f"{r['source_mb']:.0f} | {r['read_mb_s']:.0f} | {r['shard_mb_s']:.0f} | "
            f"{r['shard_mb_s'] / r['read_mb_s']:.2f} | "
            f"{r['shard_out_mb'] / r['source_mb'] * r['shard_mb_s']:.0f} | "
            f"{r['read_rss_mb']:.0f} | {r['shard_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
