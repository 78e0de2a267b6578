"""``streamvol inspect``: what a shard set holds, whether it is intact, how its crops look."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from streamvol.shard.manifest import read_manifest
from streamvol.stream.decode import iter_tar


def summary_table(manifest: dict[str, Any]) -> Table:
    """Samples, shards and bytes per split, with per-class counts."""
    names = manifest["class_names"]
    table = Table(
        title=f"{manifest['task']} shards: crop {manifest['crop']} + margin {manifest['margin']}"
    )
    table.add_column("split")
    table.add_column("shards", justify="right")
    table.add_column("samples", justify="right")
    table.add_column("MB", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for split, shards in manifest["splits"].items():
        counts = manifest["class_counts"].get(split, {})
        table.add_row(
            split,
            str(len(shards)),
            str(sum(s["count"] for s in shards)),
            f"{sum(s['bytes'] for s in shards) / 1e6:.1f}",
            *(str(counts.get(n, 0)) for n in names),
        )
    return table


def describe(manifest: dict[str, Any]) -> list[str]:
    """A few lines on everything else the manifest records."""
    stats = manifest["stats"]
    return [
        f"sources: {len(manifest['sources'])}, dtype {manifest['dtype']}, "
        f"voxel size {manifest['voxel_size']} A, pad {manifest['pad']}",
        f"members: {', '.join(manifest['members'])}",
        f"intensity: mean {stats['mean']:.4g}, std {stats['std']:.4g}, "
        f"p0.5 {stats['p0_5']:.4g}, p99.5 {stats['p99_5']:.4g}",
        f"made by: {manifest['command']}",
    ]


def preview(folder: str | Path, png: str | Path, *, n: int = 16, split: str | None = None) -> Path:
    """Save a montage of the central z slice of ``n`` crops, with class, mask outline and points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    manifest = read_manifest(folder)
    splits = [split] if split else list(manifest["splits"])
    paths = [folder / s["name"] for sp in splits for s in manifest["splits"][sp]]
    samples = list(itertools.islice(itertools.chain.from_iterable(map(iter_tar, paths)), n))
    names = manifest["class_names"]
    margin = manifest["margin"]
    cols = min(len(samples), 4) or 1
    rows = max(1, -(-len(samples) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), samples, strict=False):
        image = sample["image.npy"].astype(np.float32)
        z = image.shape[0] // 2
        ax.imshow(image[z], cmap="gray")
        crop = manifest["crop"]
        ax.add_patch(
            plt.Rectangle(
                (margin[2] - 0.5, margin[1] - 0.5),
                crop[2],
                crop[1],
                fill=False,
                ec="yellow",
                lw=0.8,
            )
        )
        if "mask.npy" in sample and sample["mask.npy"][z].any():
            ax.contour(sample["mask.npy"][z] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        if "points.npy" in sample and len(sample["points.npy"]):
            pts = sample["points.npy"]
            near = np.abs(pts[:, 0] - z) <= 3
            ax.scatter(pts[near, 2], pts[near, 1], s=14, c="red", marker="+")
        title = sample["__key__"]
        if "cls" in sample:
            label = sample["cls"]
            title += f"\n{names[label] if 0 <= label < len(names) else label}"
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
