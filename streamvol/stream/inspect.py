"""``streamvol inspect``: what a shard set holds, whether it is intact, how its crops look."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from streamvol.core.manifest import is_url, join, read_manifest, shard_records
from streamvol.errors import BadOption, ShardError
from streamvol.stream.decode import Expected, MappedFile, iter_samples


def summary_table(manifest: dict[str, Any]) -> Table:
    """Per split (columns): shards, samples, MB, and the samples of each class (rows); the
    range of the mask labels, with what a run must say of them when they are not 0 / 1."""
    splits = manifest["splits"]
    crop, margin = _zyx(manifest["crop"]), _zyx(manifest["margin"])
    title = f"{manifest['task']}: crop {crop} + margin {margin}"
    caption = None
    if manifest.get("mask_range"):
        low, high = manifest["mask_range"]
        title += f", mask labels {low} to {high}"
        if high >= max(len(manifest.get("mask_names") or ()), 2):  # more labels than classes
            caption = "train with --mask-labels binary (instance ids) or classes"
    table = Table(title=title, caption=caption, min_width=len(title) + 2)
    table.add_column("")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_row("shards", *(str(len(shards)) for shards in splits.values()))
    if _is_regions(manifest):  # stored once; an epoch draws its crops from them
        table.add_row("regions", *(str(sum(s["count"] for s in sh)) for sh in splits.values()))
        table.add_row(
            "crops/epoch", *(str(sum(sum(s["units"]) for s in sh)) for sh in splits.values())
        )
    else:
        table.add_row("samples", *(str(sum(s["count"] for s in sh)) for sh in splits.values()))
    table.add_row("MB", *(f"{sum(s['bytes'] for s in sh) / 1e6:.1f}" for sh in splits.values()))
    counts = manifest["class_counts"]
    labels = list(manifest["class_names"])
    if not any(counts.get(split, {}).get(name) for split in splits for name in labels):
        labels = []  # crops of no class (a grid over masks or picks): no rows of zeros
    if manifest.get("task") == "classification":  # masks and points label the other tasks
        labels.append("unlabelled")
    for name in labels:
        row = [str(counts.get(split, {}).get(name, 0)) for split in splits]
        if name != "unlabelled" or any(v != "0" for v in row):
            table.add_row(name, *row, style="dim" if name == "unlabelled" else None)
    return table


def _is_regions(manifest: dict[str, Any]) -> bool:
    return (manifest.get("plan") or {}).get("kind") == "regions"


def _samples(
    manifest: dict[str, Any], stored: Iterator[dict[str, Any]], margin: Any = None
) -> Iterator[dict[str, Any]]:
    """The ``stored`` samples; of a region set, crops drawn from each region (epoch 0, with
    ``margin`` around them, default the manifest's): ``_shown_units`` of each in turn."""
    if not _is_regions(manifest):
        yield from stored
        return
    from streamvol.stream.draw import DrawCrop

    radii = manifest.get("radii_voxels") or {}
    draw = DrawCrop(
        crop=tuple(manifest["crop"]),  # type: ignore[arg-type]
        margin=tuple(margin or manifest["margin"]),  # type: ignore[arg-type]
        pad=manifest.get("pad", "reflect"),
        max_shift=int(manifest["plan"].get("max_shift", 0)),
        radii=tuple(float(radii.get(c, 0.0)) for c in manifest["class_names"]),
        seed=int(manifest.get("seed", 0)),
    )
    for region in stored:
        for j in _shown_units(region["json"]["units"], region.get("points.npy")):
            unit = {"__region__": region, "__unit__": j, "__pos__": 0, "weight": 1.0}
            drawn = draw({**unit, "__key__": f"{region['__key__']}_u{j}"}, 0)
            for name in ("image.npy", "mask.npy"):
                if name in drawn:
                    drawn[name] = drawn[name].cut()
            yield drawn


def _shown_units(units: list[int], points: np.ndarray | None) -> list[int]:
    """A region's units that show it: the first pick of each class, a negative, and up to 4
    uniform draws spread over the rest."""
    per_point, negatives, rest = units
    classes = points[:per_point, 3] if per_point and points is not None else np.zeros(0)
    shown = sorted(int(np.flatnonzero(classes == c)[0]) for c in np.unique(classes))
    if negatives:
        shown.append(per_point)
    start = per_point + negatives
    return shown + [start + int(j) for j in np.linspace(0, rest - 1, min(rest, 4)).round()]


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
        *(f"split: {warning}" for warning in (manifest.get("split") or {}).get("warnings", [])),
        *_radii_line(manifest),
    ]


def _radii_line(manifest: dict[str, Any]) -> list[str]:
    """A detection set's particle radii, which its training targets are drawn from."""
    if manifest.get("task") != "detection":
        return []
    radii = manifest.get("radii_angstrom")
    if not radii:
        return ["radii: none, so `train` refuses this detection set; reshard with --radius"]
    return ["radii: " + ", ".join(f"{name} {r:g}" for name, r in radii.items()) + " A"]


def read_shard(
    folder: str | Path, record: dict[str, Any], storage: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """The decoded samples of one shard of a folder or URL, every key and member checksum
    checked against its manifest ``record``."""
    where = join(folder, record["name"])
    if is_url(folder):
        import fsspec

        opened = fsspec.open(where, "rb", **(storage or {})).open()
    else:
        opened = MappedFile(where)
    with opened as f:
        yield from iter_samples(f, where, expect=Expected.of(record))


def preview(
    folder: str | Path,
    png: str | Path,
    *,
    n: int = 16,
    split: str | None = None,
    storage: dict[str, Any] | None = None,
) -> Path:
    """Save a montage of the central z slice of ``n`` crops: each titled with its split, class
    and key, the crop's box inside its stored margin, the mask outline and the points near the
    slice, and a legend for the three."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from streamvol.core.files import save_figure

    manifest = read_manifest(folder, storage)
    splits = [split] if split else list(manifest["splits"])

    def tagged(name: str) -> Iterator[dict[str, Any]]:
        for rec in manifest["splits"][name]:
            for sample in _samples(manifest, read_shard(folder, rec, storage)):
                yield {**sample, "__split__": name}

    # the first 50 n samples of each split: enough for its classes, without reading it all
    samples = _spread(
        itertools.chain.from_iterable(itertools.islice(tagged(s), 50 * n) for s in splits), n
    )
    names = manifest["class_names"]
    margin, crop = manifest["margin"], manifest["crop"]
    cols = min(len(samples), 4) or 1
    rows = max(1, -(-len(samples) // cols))
    fig = Figure(figsize=(3 * cols, 3.1 * rows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    shown = {"mask": False, "points": False}
    for ax, sample in zip(axes.ravel(), samples, strict=False):
        image = sample["image.npy"].astype(np.float32)
        z = image.shape[0] // 2
        ax.imshow(image[z], cmap="gray")
        box = Rectangle(
            (margin[2] - 0.5, margin[1] - 0.5), crop[2], crop[1], fill=False, ec="yellow", lw=0.8
        )
        ax.add_patch(box)
        if "mask.npy" in sample and sample["mask.npy"][z].any():
            ax.contour(sample["mask.npy"][z] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
            shown["mask"] = True
        if "points.npy" in sample and len(sample["points.npy"]):
            pts = sample["points.npy"]
            near = np.abs(pts[:, 0] - z) <= 3
            ax.scatter(pts[near, 2], pts[near, 1], s=18, c="red", marker="+", linewidths=0.9)
            shown["points"] = shown["points"] or bool(near.any())
        head = sample["__split__"]
        if "cls" in sample:
            label = sample["cls"]
            head += f": {names[label] if 0 <= label < len(names) else label}"
        ax.set_title(f"{head}\n{sample['__key__']}", fontsize=7)
    handles = [Line2D([], [], color="yellow", lw=1.5, label="crop (outside: stored margin)")]
    if shown["mask"]:
        handles.append(Line2D([], [], color="cyan", lw=1.5, label="mask outline"))
    if shown["points"]:
        handles.append(
            Line2D([], [], color="red", marker="+", ls="", ms=8, label="points within 3 slices")
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    fig.suptitle(
        f"{Path(str(folder)).name}: {len(samples)} {manifest['task']} crops of "
        f"{', '.join(splits)}, central z slice, crop {_zyx(crop)} + margin {_zyx(margin)}",
        fontsize="medium",
    )
    return save_figure(fig, png, dpi=100)


def _spread(samples: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` samples taken round-robin over each class's splits, so that every class and
    split shows where ``n`` allows."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for sample in samples:
        groups.setdefault((sample.get("cls", -1), sample["__split__"]), []).append(sample)
    queues = [groups[k] for k in sorted(groups, key=lambda k: k[0])]  # splits as they came
    picked: list[dict[str, Any]] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def _zyx(values: list[int]) -> str:
    return "x".join(map(str, values))


def preview_augmented(
    folder: str | Path,
    png: str | Path,
    augment: str = "default",
    *,
    storage: dict[str, Any] | None = None,
) -> Path:
    """One crop (the first labelled one, with points if any) under 8 draws of ``augment``."""
    from streamvol.augment import load_spec, preview_augment

    manifest = read_manifest(folder, storage)
    spec = load_spec(augment)
    if spec is None:
        raise BadOption("augment", augment, "draws nothing to preview")
    spec = spec.on_voxels(manifest.get("voxel_size"))
    need = spec.margin_shortfall(manifest["crop"], manifest["margin"])
    if need and not _is_regions(manifest):
        raise BadOption(
            "augment",
            augment,
            f"{folder}: shards keep a margin of {manifest['margin']} voxels but it needs "
            f"{list(need)}",
        )
    first_split = next(iter(manifest["splits"].values()))
    stored = read_shard(folder, first_split[0], storage)
    samples = list(itertools.islice(_samples(manifest, stored, spec.margin(manifest["crop"])), 64))

    def interest(sample: dict[str, Any]) -> tuple[bool, bool, float]:
        mask = sample.get("mask.npy")
        labelled = sample.get("cls", 0) > 0 or (mask is not None and bool(mask.any()))
        edges = -abs(float(np.mean(mask > 0)) - 0.5) if mask is not None else 0.0
        return labelled, len(sample.get("points.npy", ())) > 0, edges

    # a labelled crop with points, if any; of masks, the one nearest half foreground, whose
    # outline the draws then turn
    chosen = max(samples, key=interest)
    low, high = manifest["stats"]["p0_5"], manifest["stats"]["p99_5"]  # shown in [0, 1]
    return preview_augment(chosen, spec, png, offset=low, scale=1 / max(high - low, 1e-12))


def verify(
    folder: str | Path,
    storage: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Check every shard against the manifest: size, sha256, then each sample's key and its
    members' checksums, and the sample count; report tars the manifest does not list.

    ``folder`` may be an fsspec URL: each tar is then read once, into a temporary file the
    member checks read. ``progress(bytes read, bytes in all)`` follows the reading. Returns
    the problems found, one line each.
    """
    import fsspec

    manifest = read_manifest(folder, storage)
    fs, root = fsspec.core.url_to_fs(str(folder), **(storage or {}))
    problems = []
    records = shard_records(manifest)
    listed = {posixpath.basename(p) for p in fs.glob(join(root, "*.tar"))}
    for name in sorted(listed - set(records)):
        problems.append(f"{join(folder, name)}: a tar the manifest does not list")
    total, read = sum(rec["bytes"] for rec in records.values()), 0

    def advance(n: int) -> None:
        nonlocal read
        read += n
        if progress:
            progress(read, total)

    for name, rec in records.items():
        before = read
        problem = _verify_shard(fs, join(root, name), join(folder, name), rec, advance)
        if rec["bytes"] > read - before:  # a shard missing or cut short counts as read
            advance(rec["bytes"] - (read - before))
        if problem:
            problems.append(problem)
    return problems


def _verify_shard(
    fs: Any, path: str, where: str, rec: dict[str, Any], advance: Callable[[int], None]
) -> str | None:
    if not fs.isfile(path):
        return f"{where}: missing"
    size = fs.size(path)
    if size != rec["bytes"]:
        return f"{where}: {size} bytes, manifest says {rec['bytes']}"
    local = fs.protocol in ("file", ("file", "local"))
    with contextlib.ExitStack() as stack:
        copy = None
        if not local:  # one download: the member checks read the copy
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="streamvol-verify-"))
            copy = stack.enter_context(open(Path(folder) / "shard.tar", "wb"))
        digest = hashlib.sha256()
        with fs.open(path, "rb") as f:
            for block in iter(lambda: f.read(2**22), b""):
                digest.update(block)
                if copy is not None:
                    copy.write(block)
                advance(len(block))
        if digest.hexdigest() != rec["sha256"]:
            return (
                f"{where}: sha256 differs from the manifest (the file changed since it was written)"
            )
        if copy is not None:
            copy.close()
        try:  # every key in order, every member's checksum, and nothing after the last sample
            with MappedFile(path if copy is None else copy.name) as f:
                for _ in iter_samples(f, where, expect=Expected.of(rec), require=()):
                    pass
        except ShardError as exc:
            return str(exc)
    return None
