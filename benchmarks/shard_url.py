"""Sharding to object storage: time and the local disk it takes (a benchmark, not a test).

Shards one synthetic spot set (``--n`` candidate spots, 48^3 crops with the free-rotation
margin) into a local folder and into ``s3://`` on a loopback S3 server (moto), and samples the
bytes under the run's TMPDIR every 20 ms: a set at a URL should need local room for the shards
in flight, not for the whole set. moto keeps objects in memory and is single-threaded, so the
URL times bound what a real store gives from below.

    python benchmarks/shard_url.py [--n 600] [--shard-size 50] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import tempfile
import threading
import time
import warnings
from pathlib import Path

from _results import add_out, publish


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a task removed it meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


def measure(run, folder: Path) -> tuple[float, int, object]:
    """Seconds ``run()`` takes, the most bytes seen under ``folder`` meanwhile, and its result."""
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _bytes_under(folder))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        result = run()
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        watcher.join()
    return seconds, peak[0], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="candidate spots (crops)")
    parser.add_argument("--shard-size", type=int, default=50, help="crops a tar")
    add_out(parser)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from streamvol.errors import SplitWarning
    from streamvol.shard import parse_config, shard
    from streamvol.synth import make

    work = Path(tempfile.mkdtemp(prefix="bench-shard-url-"))
    scratch = work / "tmp"
    scratch.mkdir()
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # the tasks' temporary files go under ``scratch``
    make("spots", work / "spots", n=args.n, size=(96, 256, 256), seed=0)
    config = parse_config(
        [work / "spots"], plan="points", crop=48, split="0.8,0.1,0.1", shard_size=args.shard_size
    )
    warnings.simplefilter("ignore", SplitWarning)  # one source, split in slabs: known
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    storage = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
    }
    import s3fs

    s3fs.S3FileSystem(**storage).mkdir("bench")
    rows = []
    try:
        for name, out, options in (
            ("folder", work / "set", {}),
            ("s3:// (moto)", "s3://bench/set", {"storage_options": storage}),
        ):
            seconds, peak, result = measure(
                lambda out=out, options=options: shard(config, out, **options), scratch
            )
            mb = result.bytes_written / 1e6
            rows.append((name, mb, seconds, peak / 1e6))
    finally:
        server.stop()
    table = [
        f"Sharding {args.n} crops of 48^3 (+ margin), float32, {args.shard_size} a tar, default "
        "local threads; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "",
        "| to | set MB | seconds | MB/s | peak MB under TMPDIR |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {n} | {mb:.0f} | {s:.1f} | {mb / s:.0f} | {p:.0f} |" for n, mb, s, p in rows),
    ]
    publish("\n".join(table), args.out)


if __name__ == "__main__":
    main()
