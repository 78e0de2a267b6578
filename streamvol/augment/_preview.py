"""``preview_augment``: one stored sample under several draws, as a PNG, to eyeball a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamvol.augment._cpu import apply_cpu
from streamvol.augment._spec import Augment
from streamvol.errors import BadInput, BadOption

__all__ = ["describe_params", "preview_augment"]


def describe_params(params: Any) -> str:
    """What a draw changed, in words: ``zoom 1.05, gamma 1.22, contrast 0.87, noise 0.05``
    (rotation, flips and shift show in the picture)."""
    zoom = float(abs(np.linalg.det(np.asarray(params.matrix, dtype=np.float64)[:3, :3])))
    zoom = zoom ** (1 / 3) if zoom > 0 else 1.0
    parts = []
    if abs(zoom - 1.0) >= 0.005:
        parts.append(f"zoom {1 / zoom:.2f}")  # the matrix maps output to input voxels
    for name, value, neutral in (
        ("gamma", params.gamma, 1.0),
        ("contrast", params.contrast, 1.0),
        ("brightness", params.brightness, 0.0),
        ("noise", params.noise_std, 0.0),
        ("blur", params.blur_sigma, 0.0),
    ):
        if abs(value - neutral) >= 0.005:
            parts.append(f"{name} {value:.2f}")
    return ", ".join(parts) or "geometry only"


def _member(sample: dict[str, Any], name: str) -> Any:
    """``image`` or ``image.npy``: a decoded shard sample or an already-renamed one."""
    value = sample.get(name)
    return sample.get(f"{name}.npy") if value is None else value


def _out_shape(sample: dict[str, Any], stored: tuple[int, ...]) -> tuple[int, int, int]:
    meta = sample.get("json")
    if isinstance(meta, dict) and meta.get("crop"):
        return tuple(int(c) for c in meta["crop"])  # type: ignore[return-value]
    return stored  # type: ignore[return-value]


def preview_augment(
    sample: dict[str, Any],
    augment: Augment,
    png_path: str | Path,
    *,
    draws: int = 8,
    seed: int = 0,
    offset: float | None = None,
    scale: float | None = None,
) -> Path:
    """Draw ``sample`` (a decoded stored sample: ``image`` / ``image.npy``, optional mask and
    points, ``json`` with the crop size) under ``draws`` draws: draw ``i`` is what epoch ``i``
    of a run with ``seed`` yields. Each panel shows the central z slice of the output, the mask
    outline and the points within 2 slices; the first panel is the stored centre crop. Intensities
    are normalised by the block's 0.5 / 99.5 percentiles unless ``offset`` / ``scale`` are given.
    Writes the PNG atomically and returns its path."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from streamvol.core.files import save_figure
    from streamvol.core.rng import sample_rng

    image = np.asarray(_member(sample, "image"))
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise BadInput(f"expected image (D, H, W) or (1, D, H, W), got shape {image.shape}")
    if draws < 1:
        raise BadOption("draws", draws, "expected at least 1")
    stored = tuple(image.shape)
    out_shape = _out_shape(sample, stored)
    if offset is None or scale is None:
        lo, hi = np.percentile(image.astype(np.float32), [0.5, 99.5])
        offset, scale = float(lo), 1.0 / max(float(hi - lo), 1e-12)
    data = {
        "image": image,
        "mask": _member(sample, "mask"),
        "points": _member(sample, "points"),
    }
    key = str(sample.get("__key__", "sample"))
    panels = [("stored centre crop", Augment().sample(np.random.default_rng(0), stored, out_shape))]
    for i in range(draws):
        panels.append((f"draw {i}", augment.sample(sample_rng(seed, i, key), stored, out_shape)))
    cols = min(len(panels), 3 if len(panels) <= 6 else 5)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.0 * cols, 3.3 * rows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    shown = {"mask": False, "points": False}
    for n, (title, params) in enumerate(panels):
        done = apply_cpu(data, params, offset=offset, scale=scale)
        ax = fig.add_subplot(rows, cols, n + 1)
        zc = out_shape[0] // 2
        ax.imshow(done["image"][0, zc], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if done.get("mask") is not None and (done["mask"][zc] > 0).any():
            ax.contour(done["mask"][zc] > 0, levels=[0.5], colors="tab:red", linewidths=0.8)
            shown["mask"] = True
        points = done.get("points")
        if points is not None and len(points):
            near = np.abs(points[:, 0] - zc) <= 2
            ax.scatter(
                points[near, 2],
                points[near, 1],
                c=points[near, 3],
                cmap="tab10",
                s=14,
                vmin=0,
                vmax=9,
                edgecolors="white",
                linewidths=0.4,
            )
            shown["points"] = shown["points"] or bool(near.any())
        label = "as stored" if n == 0 else describe_params(params)
        ax.set_title(f"{title}\n{textwrap.fill(label, 38)}", fontsize=8)
        ax.set_axis_off()
    handles = []
    if shown["mask"]:
        handles.append(Line2D([], [], color="tab:red", lw=1.5, label="mask outline"))
    if shown["points"]:
        label = "points within 2 slices (colour: class)"
        handles.append(Line2D([], [], marker="o", ls="", color="tab:blue", label=label))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle(
        f"{key} under {draws} draws (draw i: epoch i of a run with seed {seed}): central z "
        f"slice {out_shape[0] // 2} of {'x'.join(map(str, out_shape))}, stored "
        f"{'x'.join(map(str, stored))} {image.dtype}",
        fontsize=9,
    )
    return save_figure(fig, png_path, dpi=100)
