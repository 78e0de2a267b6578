"""What recording the mask label range costs the sharder (a benchmark, not a test).

``write_tar`` takes each mask's lowest and highest label as it writes the sample. This times
writing one shard of N samples (a crop + free-rotation margin of float32 image and uint8 mask)
against the label reductions alone, median of R rounds.

    python benchmarks/mask_labels.py [--n 32] [--side 112] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from streamvol.shard.write import write_tar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.side,) * 3
    images = [rng.normal(size=shape).astype(np.float32) for _ in range(args.n)]
    masks = [(rng.random(shape) < 0.1).astype(np.uint8) * 7 for _ in range(args.n)]

    def samples():
        for i in range(args.n):
            yield {"__key__": f"s{i}", "image.npy": images[i], "mask.npy": masks[i]}

    with tempfile.TemporaryDirectory() as folder:
        written, reduced = [], []
        for r in range(args.rounds):
            start = time.perf_counter()
            write_tar(Path(folder) / f"r{r}.tar", samples())
            written.append(time.perf_counter() - start)
            start = time.perf_counter()
            for mask in masks:
                int(mask.min()), int(mask.max())
            reduced.append(time.perf_counter() - start)
    w, m = np.median(written), np.median(reduced)
    print(
        f"write_tar, {args.n} samples of {args.side}^3 float32 + uint8 mask: {w * 1e3:.0f} ms; "
        f"their mask min + max: {m * 1e3:.1f} ms ({m / w:.1%} of the write)"
    )


if __name__ == "__main__":
    main()
