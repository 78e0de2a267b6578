"""3D augmentation throughput: streamvol's fused numba kernel against MONAI, TorchIO, kornia (CPU)
and scipy, on the same crops (a benchmark, not a test).

Every library does rotate (free, any angle) + flip (each axis, p 0.5) + Gaussian noise, one crop
at a time, at 64^3 and 96^3 outputs, with 1 and 2 threads. streamvol and scipy resample the
stored block (crop plus the free-rotation margin) straight to the output size, as the loader
does; MONAI, TorchIO and kornia rotate the crop itself (their usual use, and no more work than
the block). streamvol's time includes drawing the parameters. Each configuration runs for
``--seconds`` after a warm-up, ``--rounds`` times interleaved (the best round counts, so a busy
shared machine hurts less). Each library cycles over ``--crops`` inputs: 1 (the default) keeps
them in the CPU's caches, as a sample the loader has just decoded is; with more, streamvol's
5.6 MB float32 blocks spill out of the caches long before the others' 1 MB crops do. Needs the
bench extras: ``pip install monai torchio``.

    python benchmarks/augment.py [--seconds 2] [--rounds 2] [--crops 1] [--out RESULTS.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from _results import add_out, publish

from streamvol.augment import Augment, Flip, Noise, Rotate, apply_cpu
from streamvol.bench.loader import cpu_model
from streamvol.shard.plan import rotation_margin

SIZES = (64, 96)
THREADS = (1, 2)


def set_threads(n: int) -> None:
    """Thread count for every library at once (numba's is passed to apply_cpu)."""
    torch.set_num_threads(n)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except ImportError:
        pass


def make_crops(size: int, count: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` stored blocks (crop + free-rotation margin) and their central crops, float32."""
    margin = rotation_margin(size)[0]
    rng = np.random.default_rng(size)
    blocks = [rng.random((size + 2 * margin,) * 3, dtype=np.float32) for _ in range(count)]
    crops = [
        np.ascontiguousarray(b[margin:-margin, margin:-margin, margin:-margin]) for b in blocks
    ]
    return blocks, crops


def streamvol_step(blocks: list[np.ndarray], size: int, threads: int, dtype=np.float32):
    spec = Augment(
        rotate=Rotate("free", 180.0), flip=Flip((0.5, 0.5, 0.5)), noise=Noise((0.05, 0.1))
    )
    samples = [{"image": (b * 255).astype(np.uint8) if dtype == np.uint8 else b} for b in blocks]
    state = {"i": 0}

    def step() -> None:
        i = state["i"] = state["i"] + 1
        rng = np.random.default_rng(np.random.SeedSequence([0, i, 12345]))
        sample = samples[i % len(samples)]
        params = spec.sample(rng, sample["image"].shape, (size, size, size))
        apply_cpu(sample, params, threads=threads)

    return step


def monai_transform():
    """MONAI's rotate (any angle about each axis) + three flips + noise, seeded (also used by
    benchmarks/device.py on the GPU)."""
    from monai.transforms import Compose, RandFlip, RandGaussianNoise, RandRotate

    return Compose(
        [
            RandRotate(math.pi, math.pi, math.pi, prob=1.0, keep_size=True, padding_mode="zeros"),
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandFlip(prob=0.5, spatial_axis=2),
            RandGaussianNoise(prob=1.0, std=0.1),
        ]
    ).set_random_state(0)


def monai_step(crops: list[np.ndarray], size: int, threads: int):
    transform = monai_transform()
    tensors = [torch.from_numpy(c)[None] for c in crops]
    state = {"i": 0}

    def step() -> None:
        state["i"] += 1
        transform(tensors[state["i"] % len(tensors)])

    return step


def torchio_step(crops: list[np.ndarray], size: int, threads: int):
    import torchio as tio

    transform = tio.Compose(
        [
            tio.RandomAffine(scales=0, degrees=180, translation=0, default_pad_value=0.0),
            tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
            tio.RandomNoise(std=(0.05, 0.1)),
        ]
    )
    subjects = [tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(c)[None])) for c in crops]
    state = {"i": 0}

    def step() -> None:
        state["i"] += 1
        transform(subjects[state["i"] % len(subjects)])

    return step


def kornia_step(crops: list[np.ndarray], size: int, threads: int):
    import kornia.augmentation as ka

    pipeline = torch.nn.Sequential(
        ka.RandomRotation3D(degrees=180.0, p=1.0),
        ka.RandomDepthicalFlip3D(p=0.5),
        ka.RandomVerticalFlip3D(p=0.5),
        ka.RandomHorizontalFlip3D(p=0.5),
    )
    tensors = [torch.from_numpy(c)[None, None] for c in crops]
    generator = torch.Generator().manual_seed(0)
    state = {"i": 0}

    def step() -> None:
        state["i"] += 1
        with torch.no_grad():
            out = pipeline(tensors[state["i"] % len(tensors)])
            out + 0.1 * torch.randn(out.shape, generator=generator)

    return step


def scipy_step(blocks: list[np.ndarray], size: int, threads: int):
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    state = {"i": 0}

    def step() -> None:
        state["i"] += 1
        block = blocks[state["i"] % len(blocks)]
        r = Rotation.random(random_state=rng).as_matrix()
        c_in, c_out = (np.array(block.shape) - 1) / 2, (size - 1) / 2
        out = ndimage.affine_transform(
            block, r, offset=c_in - r @ np.full(3, c_out), output_shape=(size,) * 3, order=1
        )
        axes = [a for a in range(3) if rng.random() < 0.5]
        out = np.flip(out, axes) if axes else out
        out + rng.standard_normal(out.shape, dtype=np.float32) * 0.1

    return step


def rate(step: Callable[[], None], seconds: float) -> float:
    """Crops per second: warm up twice, then count calls for ``seconds`` (at least 3)."""
    step()
    step()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


LIBRARIES: dict[str, tuple[Callable, str]] = {
    "streamvol (numba, fused)": (streamvol_step, "blocks"),
    "streamvol, uint8 block": (
        lambda b, s, t: streamvol_step(b, s, t, dtype=np.uint8),
        "blocks",
    ),
    "MONAI": (monai_step, "crops"),
    "TorchIO": (torchio_step, "crops"),
    "kornia (CPU)": (kornia_step, "crops"),
    "scipy": (scipy_step, "blocks"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--crops",
        type=int,
        default=1,
        help="distinct inputs per size, cycled (1: cache-warm, as a just-decoded sample is)",
    )
    add_out(parser)
    args = parser.parse_args()

    args.load_before = os.getloadavg()[0]
    data = {size: make_crops(size, args.crops) for size in SIZES}
    best: dict[tuple[int, int, str], float] = {}
    for round_ in range(args.rounds):
        for size in SIZES:
            blocks, crops = data[size]
            for threads in THREADS:
                set_threads(threads)
                for name, (factory, inputs) in LIBRARIES.items():
                    step = factory(blocks if inputs == "blocks" else crops, size, threads)
                    r = rate(step, args.seconds)
                    key = (size, threads, name)
                    best[key] = max(best.get(key, 0.0), r)
                    print(f"round {round_} {size}^3 threads={threads} {name}: {r:.1f} crops/s")
    args.load_after = os.getloadavg()[0]
    publish(report(best, args), args.out)


def report(best: dict[tuple[int, int, str], float], args: argparse.Namespace) -> str:
    import kornia
    import monai
    import numba
    import scipy
    import torchio

    lines = [
        "",
        f"## Augmentation: rotate + flip + noise, crops/s ({time.strftime('%Y-%m-%d')})",
        "",
        'What runs: "The augmentation benchmark" at the top of this file.',
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, no GPU; "
        f"Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"torch {torch.__version__}, MONAI {monai.__version__}, TorchIO {torchio.__version__}, "
        f"kornia {kornia.__version__}, scipy {scipy.__version__}. Command: `python "
        f"benchmarks/augment.py --seconds {args.seconds:g} --rounds {args.rounds} --crops "
        f"{args.crops}` (best of {args.rounds} interleaved rounds). 1-minute load average "
        f"{args.load_before:.1f} before, {args.load_after:.1f} after.",
        "",
        "| output | threads | library | crops/s | Mvoxel/s | streamvol is x faster |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for size in SIZES:
        for threads in THREADS:
            ours = best[(size, threads, "streamvol (numba, fused)")]
            for name in LIBRARIES:
                r = best[(size, threads, name)]
                lines.append(
                    f"| {size}^3 | {threads} | {name} | {r:.1f} | {r * size**3 / 1e6:.1f} | "
                    f"{ours / r:.1f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
