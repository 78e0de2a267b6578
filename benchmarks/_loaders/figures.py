"""The figures of a run: the markdown section appended to ``RESULTS.md`` (the machine, the
settings, the tables), a JSON file of every measurement, and a bar chart. Figures only: what
they mean, and the targets they are judged by, are written by people in ``RESULTS.md``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from _loaders.cases import AUGMENTING, READERS, Case, find
from _loaders.data import Data


def versions() -> dict[str, str]:
    import monai
    import numba
    import scipy
    import SimpleITK
    import tifffile
    import torchio

    import streamvol
    from streamvol.bench.loader import machine_info

    info = machine_info()
    return {
        "cpus": str(info["cpus"]),
        "cpu": info["cpu"],
        "platform": info["platform"],
        "python": info["python"],
        "torch": info["torch"],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "monai": monai.__version__,
        "torchio": torchio.__version__,
        "SimpleITK": SimpleITK.__version__,
        "tifffile": tifffile.__version__,
        "streamvol": streamvol.__version__,
    }


def reference(case: Case, all_cases: list[Case]) -> Case | None:
    """What ``case`` is compared with: streamvol's loader of the same group and worker count."""
    name = {"augment": "streamvol", "read": "streamvol shards"}.get(case.group)
    return find(all_cases, name, case.workers) if name else None


def table(all_cases: list[Case]) -> list[str]:
    lines = [
        "| group | loader | workers | samples/s (median) | min–max | streamvol ÷ this |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for case in sorted(
        (c for c in all_cases if c.group != "kernel"),
        key=lambda c: (c.group, c.workers, -c.median),
    ):
        ref = reference(case, all_cases)
        ratio = f"{ref.median / case.median:.2f}x" if ref else "–"
        lines.append(
            f"| {case.group} | {case.name} | {case.workers} | {case.median:.1f} | "
            f"{min(case.rates):.1f}–{max(case.rates):.1f} | {ratio} |"
        )
    return lines


def kernel_table(all_cases: list[Case], workers: tuple[int, ...]) -> list[str]:
    lines = [
        "| streamvol loader (augment) | samples/s | bare kernel, same thread count | samples/s "
        "| loader ÷ kernel |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for w in workers:
        loader = find(all_cases, "streamvol", w)
        for kernel in (
            c for c in all_cases if c.group == "kernel" and c.workers == max(w, 1) and loader
        ):
            lines.append(
                f"| {w} workers | {loader.median:.1f} | {kernel.name} | {kernel.median:.1f} | "
                f"{100 * loader.median / kernel.median:.0f}% |"
            )
    return lines


def stage_ms(case: Case) -> dict[str, float]:
    """The streamvol loader's stage times, ms per sample (summed over workers), and its wall."""
    if not (case.timed_samples and case.stages):
        return {}
    ms = {k: 1e3 * v / case.timed_samples for k, v in case.stages.items()}
    return {**ms, "wall": 1e3 / case.median}


def stage_table(all_cases: list[Case], workers: tuple[int, ...]) -> list[str]:
    lines = [
        "| streamvol loader (augment) | read + decode | augment | collate | wall |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for w in workers:
        case = find(all_cases, "streamvol", w)
        ms = stage_ms(case) if case else {}
        if ms:
            lines.append(
                f"| {w} workers, ms per sample | {ms.get('read', 0):.1f} | "
                f"{ms.get('augment', 0):.1f} | {ms.get('collate', 0):.1f} | {ms['wall']:.1f} |"
            )
    return lines


def settings(data: Data, args: Any, workers: tuple[int, ...], batches: int) -> dict[str, Any]:
    """The run's settings, as the JSON and the markdown give them."""
    return {
        "samples": len(data.npy),
        "size": data.size,
        "margin": data.margin[0],
        "stored": data.size + 2 * data.margin[0],
        "batch_size": args.batch_size,
        "workers": list(workers),
        "batches_per_repeat": batches,
        "repeats": args.repeats,
        "data_seconds": round(data.seconds, 1),
        "command": (
            f"python benchmarks/loaders.py --samples {args.samples} --size {args.size} "
            f"--workers {args.workers} --repeats {args.repeats}"
        ),
    }


def markdown(
    all_cases: list[Case],
    config: dict[str, Any],
    workers: tuple[int, ...],
    seconds: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    v: dict[str, str],
    chart: str | None,
) -> list[str]:
    """The section appended to ``RESULTS.md``: a heading, the machine and settings, the tables."""
    c = config
    return [
        "",
        "## Loaders: streamvol against seed-style, MONAI and TorchIO "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        'What runs and the targets: "The loaders benchmark" at the top of this file.',
        "",
        f"Machine: {v['cpus']} cores, {v['cpu']}, {v['platform']}; Python {v['python']}, "
        f"torch {v['torch']}, numpy {v['numpy']}, scipy {v['scipy']}, numba {v['numba']}, "
        f"monai {v['monai']}, torchio {v['torchio']} (SimpleITK {v['SimpleITK']}), tifffile "
        f"{v['tifffile']}, streamvol {v['streamvol']}. No GPU. Load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.2f}' for x in load[0])} before, "
        f"{', '.join(f'{x:.2f}' for x in load[1])} after.",
        "",
        f"Run: {c['samples']} samples of {c['size']}^3 (margin {c['margin']}, {c['stored']}^3 "
        f"stored), batch {c['batch_size']}, workers {', '.join(map(str, workers))}, "
        f"{c['batches_per_repeat']} batches per repeat, median of {c['repeats']} interleaved "
        f"repeats after a warm-up round; whole run {seconds:.0f} s, data preparation "
        f"{c['data_seconds']:.0f} s. Command: `{c['command']}`."
        + (f" Chart: `{chart}`." if chart else ""),
        "",
        *table(all_cases),
        "",
        *kernel_table(all_cases, workers),
        "",
        *stage_table(all_cases, workers),
    ]


def results_json(
    all_cases: list[Case],
    config: dict[str, Any],
    seconds: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    v: dict[str, str],
) -> dict[str, Any]:
    """Every measurement of the run: each case's rates per repeat, and the streamvol loader's
    stage times."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": v,
        "load_average": {"before": list(load[0]), "after": list(load[1])},
        "seconds": round(seconds, 1),
        "config": config,
        "cases": [
            {
                "group": c.group,
                "name": c.name,
                "workers": c.workers,
                "samples_per_s": {
                    "median": c.median,
                    "min": min(c.rates),
                    "max": max(c.rates),
                    "repeats": list(c.rates),
                },
                **({"stages_ms": stage_ms(c)} if c.name == "streamvol" and stage_ms(c) else {}),
            }
            for c in all_cases
        ],
    }


def plot(all_cases: list[Case], workers: tuple[int, ...], size: int, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [*AUGMENTING, *READERS]
    kernels = [c for c in all_cases if c.group == "kernel"]
    fig = Figure(figsize=(9, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / len(workers)
    ys = np.arange(len(names))
    for k, w in enumerate(workers):
        rows = [find(all_cases, n, w) for n in names]
        med = [r.median if r else 0.0 for r in rows]
        err = [
            [r.median - min(r.rates) if r else 0.0 for r in rows],
            [max(r.rates) - r.median if r else 0.0 for r in rows],
        ]
        ax.barh(ys + k * height, med, height, xerr=err, capsize=2, label=f"{w} workers")
    base = len(names)
    for i, c in enumerate(kernels):
        err = [[c.median - min(c.rates)], [max(c.rates) - c.median]]
        ax.barh(base + i, c.median, 0.8 / len(workers), xerr=err, capsize=2, color="0.5")
    ax.set_yticks(
        list(ys + height * (len(workers) - 1) / 2) + [base + i for i in range(len(kernels))],
        [
            *[f"{n} (augment)" if n in AUGMENTING else f"{n} (read only)" for n in names],
            *[f"bare {c.name}" for c in kernels],
        ],
    )
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("samples / s (median, min–max bars; log scale)")
    ax.set_title(f"3D loaders, same {size}^3 crops, rotate + flip + noise, CPU only")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
