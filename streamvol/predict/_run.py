"""A trained run applied to whole volumes: probabilities, picks per particle type, label volumes.

``Predictor`` holds a run's best weights (EMA when trained with it) and what the model expects
of its input (the shard set's level, dtype encoding and normalisation). ``predict_volumes``
walks the sources one volume at a time, each read block of planes by block of planes as the
windows reach them: detection runs find the peaks of per-type probability volumes and write
copick picks and ``picks.csv``; segmentation runs write OME-Zarr label and probability volumes
as the windows finish their planes, so memory does not grow with a stack's depth.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch

from streamvol.core.files import write_json_atomic
from streamvol.core.manifest import normalization
from streamvol.errors import BadOption, BadVolumeValues, NoVolumeFound, RunError, ShardError
from streamvol.io import Volume, discover, is_multilabel, open_volume
from streamvol.predict._peaks import METHODS, find_peaks
from streamvol.predict._window import (
    Window,
    check_patch,
    count_windows,
    sliding_window,
    sliding_window_slabs,
)

THRESHOLDS = "thresholds.json"
DEFAULT_THRESHOLD = 0.5

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class Peaks:
    """How picks are taken from a type's probabilities: ``nms`` (local maxima within
    ``distance`` x the particle radius) or ``cc`` (centroids of connected components of at
    least ``min_size`` voxels)."""

    method: str = "nms"
    distance: float = 0.5
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadOption("peaks", self.method, f"expected one of {', '.join(METHODS)}")
        if not (math.isfinite(self.distance) and self.distance > 0):
            raise BadOption("distance", self.distance, "expected a positive fraction")
        if self.min_size < 1:
            raise BadOption("min_size", self.min_size, "expected >= 1 voxel")


class _Prepared:
    """A volume whose ``[z0:z1]`` is float32 planes encoded (float16, uint8 scaling) and
    normalised as the shard set's crops were, read only when asked for."""

    def __init__(self, volume: Volume, manifest: Mapping[str, Any]):
        self.volume, self.manifest = volume, manifest
        self.offset, self.scale = normalization(manifest)
        self.shape = tuple(volume.shape)

    def __getitem__(self, planes: slice) -> np.ndarray:
        data = np.asarray(self.volume.data[planes], dtype=np.float32)
        dtype = self.manifest.get("config", {}).get("dtype")
        if dtype == "float16":
            data = data.astype(np.float16).astype(np.float32)
        elif dtype == "uint8":
            low, high = self.manifest["stats"]["p0_5"], self.manifest["stats"]["p99_5"]
            data = np.clip(np.rint((data - low) * (255.0 / max(high - low, 1e-12))), 0, 255)
        data -= np.float32(self.offset)
        data *= np.float32(self.scale)
        return data


class Predictor:
    """A trained run's model, ready for whole volumes (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Any,
        manifest: dict[str, Any],
        *,
        device: torch.device,
        amp: torch.dtype | None = None,
    ) -> None:
        if task.kind == "classification":
            raise RunError(
                "a classification run classifies crops, not whole volumes: shard the new data "
                "as its set was (--plan, --crop; --split 0,0,1 puts it all in test), then "
                "streamvol predict RUN --shards NEW"
            )
        if task.kind not in ("detection", "segmentation"):
            raise RunError(
                f"a {task.kind} run predicts no volumes; whole-volume prediction needs a "
                "detection or segmentation run"
            )
        self.model = model.eval()
        self.task = task
        self.manifest = manifest
        self.device = device
        self.amp = amp

    @classmethod
    def from_trainer(cls, trainer: Any) -> Predictor:
        net = trainer.ema.model if getattr(trainer, "ema", None) else trainer.model
        return cls(net, trainer.task, trainer.manifest, device=trainer.device, amp=trainer.amp)

    # --- what the model expects -------------------------------------------------------------

    @property
    def detection(self) -> bool:
        return self.task.kind == "detection"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.task.class_names)

    @property
    def channels(self) -> int:
        """Channels of ``probabilities``: one per particle type, or the model's outputs."""
        if self.detection:
            return self.task.target.num_types
        return int(getattr(self.model, "num_outputs", self.task.num_classes))

    @property
    def level(self) -> int:
        return int(self.manifest.get("config", {}).get("level", 0))

    @property
    def multiple(self) -> int:
        """What patch sides must be a multiple of (a U-Net's 2**depth)."""
        return 2 ** int(getattr(self.model, "depth", 0))

    def default_patch(self) -> tuple[int, int, int]:
        """The training crop, rounded up to the model's multiple."""
        m = self.multiple
        return tuple(int(math.ceil(c / m) * m) for c in self.manifest["crop"])  # type: ignore[return-value]

    def window(self, window: Window | None = None, **overrides: Any) -> Window:
        """Window settings: ``window`` (or the defaults, patch = training crop) with overrides."""
        base = window or Window(patch=self.default_patch())
        given = {k: v for k, v in overrides.items() if v is not None}
        out = replace(base, **given)
        check_patch(out.patch, self.multiple)
        return out

    def prepare(self, volume: Volume) -> _Prepared:
        """``volume`` read lazily, each block of planes encoded and normalised as the training
        crops were (``sliding_window_slabs`` reads it plane block by plane block)."""
        return _Prepared(volume, self.manifest)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.detection:
            if self.task.target.kind == "sphere":
                return torch.softmax(logits, dim=1)[:, 1:]
            return torch.sigmoid(logits)
        if logits.shape[1] == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def probabilities(
        self,
        volume: Volume | np.ndarray,
        window: Window,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """(channels, D, H, W) float32: per particle type (detection) or class probabilities."""
        return self._windows(sliding_window, volume, window, progress)

    def probability_slabs(
        self,
        volume: Volume | np.ndarray,
        window: Window,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``probabilities`` as ``(z0, (channels, n, H, W))`` slabs in z order, each finished
        once no later window reaches it: memory does not grow with the volume's depth."""
        return self._windows(sliding_window_slabs, volume, window, progress)

    def _windows(
        self,
        run: Callable[..., Any],
        volume: Volume | np.ndarray,
        window: Window,
        progress: Callable[[int, int], None] | None,
    ) -> Any:
        if isinstance(volume, Volume):  # predict_volumes checks a file's values before reading
            data = self.prepare(volume)
        else:
            data = volume
            bad = int(data.size - np.count_nonzero(np.isfinite(data)))
            if bad:
                raise BadVolumeValues(
                    f"the array given: {bad} NaN or Inf voxels; expected finite values (fill or "
                    "mask them before predicting)"
                )
        self.model.eval()
        return run(
            data,
            lambda x: self._activate(self.model(x)),
            self.channels,
            window,
            device=self.device,
            amp=self.amp,
            progress=progress,
        )

    # --- picks ------------------------------------------------------------------------------

    def voxel_size(self, volume: Volume, override: float | None = None) -> np.ndarray:
        """(z, y, x) Angstrom: ``override``, the volume's own, or the training data's."""
        if override is not None:
            return np.full(3, float(override))
        size = volume.voxel_size or self.manifest.get("voxel_size")
        if not size:
            raise NoVolumeFound(
                f"{volume.path}: no voxel size in the file or the run's shard set; picks are in "
                f"Angstrom, so give one (--voxel-size)"
            )
        return np.asarray(size, np.float64)

    def peaks(
        self,
        probs: np.ndarray,
        voxel_size: np.ndarray,
        thresholds: Mapping[str, float],
        peaks: Peaks,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per particle type: (N, 3) z, y, x Angstrom and (N,) scores above its threshold."""
        out = {}
        for k, name in enumerate(self.class_names):
            radius = self.task.radii_angstrom[k] / np.asarray(voxel_size)  # voxels per axis
            coords, scores = find_peaks(
                probs[k],
                thresholds.get(name, DEFAULT_THRESHOLD),
                peaks.distance * radius,
                method=peaks.method,
                min_size=peaks.min_size,
            )
            out[name] = (coords * voxel_size, scores)
        return out


# --- the run's saved choices ----------------------------------------------------------------------


def load_choices(run: str | Path) -> dict[str, Any]:
    """The run's ``thresholds.json`` (thresholds per type and the window and peak settings they
    were chosen with), or an empty dict when the run has none."""
    path = Path(run) / THRESHOLDS
    return json.loads(path.read_text()) if path.is_file() else {}


def settings_from(choices: Mapping[str, Any]) -> tuple[Window | None, Peaks]:
    saved = choices.get("settings", {})
    window = None
    if "window" in saved:
        w = dict(saved["window"])
        window = Window(
            patch=tuple(w["patch"]),  # type: ignore[arg-type]
            overlap=w["overlap"],
            batch_size=w["batch_size"],
            blend=w["blend"],
            tta=tuple(w["tta"]),
        )
    return window, Peaks(**saved["peaks"]) if "peaks" in saved else Peaks()


# --- whole sources ------------------------------------------------------------------------------


def resolve_sources(
    sources: Sequence[str | Path],
    *,
    tomogram: str = "denoised",
    voxel_spacing: float | None = None,
) -> list[tuple[str, Path]]:
    """(experiment id, volume path) of every volume under ``sources``: a copick project's runs
    (the run names; ``tomogram`` and ``voxel_spacing`` choose among their tomograms), volume
    files or folders (their ids), any layout ``discover`` reads."""
    found: dict[str, Path] = {}
    for source in sources:
        dataset = discover(source, tomogram=tomogram, voxel_spacing=voxel_spacing)
        for spec in dataset.sources:
            name = experiment_name(spec.id, spec.image)
            if name in found and found[name] != spec.image:
                raise NoVolumeFound(
                    f"two volumes get the experiment id {name!r}: {found[name]} and "
                    f"{spec.image}; rename one"
                )
            found[name] = spec.image
    return list(found.items())


def experiment_name(source_id: str, image: str | Path) -> str:
    """What predictions name a volume: its copick run's name, as the run's folder spells it
    (``ExperimentRuns/<run>/VoxelSpacing<s>/<tomogram>.zarr``; source ids replace its dots),
    else its source id."""
    path = Path(image)
    parents = path.parents
    if (
        len(parents) > 2
        and path.parent.name.startswith("VoxelSpacing")
        and parents[2].name == "ExperimentRuns"
    ):
        return parents[1].name
    return source_id


def split_sources(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The manifest's source records whose crops went to ``split`` (splits group by source)."""
    import re

    if split not in manifest["splits"]:
        raise ShardError(
            f"split {split!r} is not in the shard set; it has {', '.join(manifest['splits'])}"
        )
    pattern = re.compile(r"^(.*)_z\d+_y\d+_x\d+$")
    ids: set[str] = set()
    for record in manifest["splits"][split]:
        for key in record["keys"]:
            match = pattern.match(key)
            if match:
                ids.add(match.group(1))
    return [s for s in manifest["sources"] if s["id"] in ids]


def predict_volumes(
    predictor: Predictor,
    run: str | Path,
    sources: Sequence[str | Path] | None,
    out: str | Path,
    *,
    split: str = "test",
    patch: Sequence[int] | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    tta: Sequence[str] | None = None,
    peaks: str | None = None,
    distance: float | None = None,
    min_size: int | None = None,
    threshold: float | None = None,
    voxel_size: float | None = None,
    tomogram: str | None = None,
    voxel_spacing: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every volume of ``sources`` (None: the tomograms of the run's ``split``) into
    ``out`` with ``predictor`` (the model of ``run``: ``streamvol.train.predict_volumes`` loads
    it); see the module docstring. Settings not given come from the run's ``thresholds.json``
    (those its thresholds were chosen with), else the defaults; a copick project's ``tomogram``
    and ``voxel_spacing``, those the run's shards read. A volume holding NaN or Inf is refused
    (``BadVolumeValues``, naming its file and how many) before anything is written. Returns the
    summary also written to ``out/predict.json``.
    """
    from streamvol.predict._write import write_copick_picks, write_picks_csv

    started = time.perf_counter()
    choices = load_choices(run)
    saved_window, saved_peaks = settings_from(choices)
    window = predictor.window(
        saved_window,
        patch=tuple(patch) if patch else None,
        overlap=overlap,
        batch_size=batch_size,
        tta=tuple(tta) if tta is not None else None,
    )
    peak = replace(
        saved_peaks,
        **{
            k: v
            for k, v in (("method", peaks), ("distance", distance), ("min_size", min_size))
            if v is not None
        },
    )
    thresholds = dict(choices.get("thresholds", {}))
    if threshold is not None:
        thresholds = {name: float(threshold) for name in predictor.class_names}
    if sources:
        shard_config = predictor.manifest.get("config", {})  # copick: as the run's shards
        if voxel_spacing is None:
            voxel_spacing = shard_config.get("voxel_spacing")
        tomogram = tomogram or shard_config.get("tomogram") or "denoised"
        volumes = resolve_sources(sources, tomogram=tomogram, voxel_spacing=voxel_spacing)
    else:
        volumes = [
            (experiment_name(s["id"], s["path"]), Path(s["path"]))
            for s in split_sources(predictor.manifest, split)
        ]
        if not volumes:
            raise NoVolumeFound(f"{run}: split {split!r} of the run's shard set has no sources")
    opened = [open_volume(path, level=predictor.level) for _, path in volumes]
    for volume in opened:  # before anything is written: NaN would spread over every window
        bad = int((~da.isfinite(volume.data)).sum().compute())
        if bad:
            raise BadVolumeValues(
                f"{volume.path}: {bad} NaN or Inf voxels; expected finite values (fill or mask "
                "them before predicting)"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, Sequence[float]]] = []
    summary: dict[str, Any] = {"experiments": {}}
    copick_seg = _learned_segmentation(predictor)
    for i, ((experiment, path), volume) in enumerate(zip(volumes, opened, strict=True)):
        label = f"{experiment} ({i + 1}/{len(volumes)})"
        total = count_windows(volume.shape, window)

        def tick(done: int, _total: int, label: str = label, total: int = total) -> None:
            if progress:
                progress(label, done, total)

        entry: dict[str, Any] = {"path": str(path), "shape": list(volume.shape)}
        if predictor.detection:
            size = predictor.voxel_size(volume, voxel_size)  # before the windows: none is refused
            trained = predictor.manifest.get("voxel_size")
            if trained and not np.allclose(size, trained, rtol=0.01):
                entry["warning"] = (
                    f"voxel size {size.tolist()} A, but the run learned from {trained} A: "
                    "particles look larger or smaller than in training"
                )
            probs = predictor.probabilities(volume, window, tick)
            found = predictor.peaks(probs, size, thresholds, peak)
            del probs
            for name, (zyx, scores) in found.items():
                write_copick_picks(
                    out, experiment, name, zyx, scores, voxel_spacing=float(np.mean(size))
                )
                rows.extend((experiment, name, p) for p in zyx)
            entry["picks"] = {name: len(zyx) for name, (zyx, _) in found.items()}
        else:
            copick = _copick_segmentation_path(out, experiment, path, copick_seg)
            if predictor.level:  # a copick run's spacing folder holds level 0 only
                copick = None
            entry.update(
                _write_segmentation(predictor, volume, window, tick, out / experiment, copick)
            )
        summary["experiments"][experiment] = entry
    if predictor.detection:
        radii = dict(zip(predictor.class_names, predictor.task.radii_angstrom, strict=True))
        # a run trained before the manifest recorded weights has none: the config omits them
        known = predictor.task.weights
        weights = dict(zip(predictor.class_names, known, strict=True)) if known else {}
        _keep_or_write_config(out, radii, weights)
        summary["picks_csv"] = str(write_picks_csv(out / "picks.csv", rows))
        summary["thresholds"] = {
            n: thresholds.get(n, DEFAULT_THRESHOLD) for n in predictor.class_names
        }
        summary["thresholds_from"] = (
            "--threshold" if threshold is not None else choices.get("from", "default")
        )
        summary["peaks"] = asdict(peak)
    summary.update(
        {
            "run": str(run),
            "task": predictor.task.kind,
            "class_names": list(predictor.class_names),
            **({"binary_mask": True} if predictor.task.binary_mask else {}),
            **_copick_masks(predictor.manifest),
            "window": asdict(window),
            "device": str(predictor.device),
            "seconds": time.perf_counter() - started,
        }
    )
    write_json_atomic(out / "predict.json", summary)
    return summary


def _learned_segmentation(predictor: Predictor) -> tuple[str, bool] | None:
    """The copick segmentation a run learned (its name, and whether multilabel: not when the
    run learned its labels as one foreground), which its predictions on copick runs are
    written as; None for other masks."""
    uri = predictor.manifest.get("config", {}).get("segmentation")
    if not uri:
        return None
    masks = [s["mask"] for s in predictor.manifest.get("sources", ()) if s.get("mask")]
    multilabel = any(is_multilabel(m) for m in masks)
    return uri.partition(":")[0], multilabel and not predictor.task.binary_mask


def _copick_segmentation_path(
    out: Path, experiment: str, path: Path, learned: tuple[str, bool] | None
) -> tuple[Path, str, float] | None:
    """Where the labels of a copick run's tomogram (``.../<run>/VoxelSpacing<s>/<tomogram>.zarr``)
    go as the run's segmentation in ``out`` (user ``streamvol``, beside the one it learned from
    when ``out`` is the project), with its name and spacing; None for other volumes."""
    from streamvol.predict._write import copick_segmentation_path

    if learned is None or experiment_name("", path) != experiment:  # not a copick run's tomogram
        return None
    try:
        spacing = float(path.parent.name.removeprefix("VoxelSpacing"))
    except ValueError:
        return None
    name, multilabel = learned
    target = copick_segmentation_path(out, experiment, name, spacing, multilabel=multilabel)
    return target, name, spacing


def _write_segmentation(
    predictor: Predictor,
    volume: Volume,
    window: Window,
    progress: Callable[[int, int], None],
    folder: Path,
    copick: tuple[Path, str, float] | None,
) -> dict[str, str]:
    """Predict ``volume`` into ``folder``'s label and probability volumes (and the copick
    segmentation, if given) block of planes by block of planes, as the windows finish them."""
    from streamvol.predict._write import OmeZarrWriter

    size = volume.voxel_size
    channels = predictor.channels
    with contextlib.ExitStack() as stack:
        labels_out = stack.enter_context(
            OmeZarrWriter(folder / "labels.ome.zarr", volume.shape, np.uint8, size, name="labels")
        )
        probs_out = stack.enter_context(
            OmeZarrWriter(
                folder / "probabilities.ome.zarr",
                (channels, *volume.shape),
                np.float16,
                size,
                name="probabilities",
                channel_names=_channel_names(predictor),
            )
        )
        copick_out = None
        if copick is not None:
            target, name, spacing = copick
            copick_out = stack.enter_context(
                OmeZarrWriter(target, volume.shape, np.uint8, (spacing,) * 3, name=name)
            )
        for z0, probs in predictor.probability_slabs(volume, window, progress):
            labels = _labels(probs)
            labels_out.write(z0, labels)
            probs_out.write(z0, probs.astype(np.float16))
            if copick_out is not None:
                copick_out.write(z0, labels)
            del probs, labels  # not held while the next block is computed
    return {"copick_segmentation": str(copick[0])} if copick is not None else {}


def _labels(probs: np.ndarray) -> np.ndarray:
    """(n, H, W) uint8 labels of (channels, n, H, W) probabilities: the most probable class, or
    above 0.5 for one channel; plane by plane, so no int64 copy of the block is made."""
    if probs.shape[0] == 1:
        return (probs[0] > 0.5).astype(np.uint8)
    labels = np.empty(probs.shape[1:], np.uint8)
    for k in range(probs.shape[1]):
        labels[k] = probs[:, k].argmax(0)
    return labels


def _copick_masks(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Where a copick project holds the masks of a run trained on its segmentation, so that
    ``score`` finds them: the shards' segmentation, tomogram and voxel spacing."""
    config = manifest.get("config", {})
    if not config.get("segmentation"):
        return {}
    keys = ("segmentation", "tomogram", "voxel_spacing")
    return {"copick_masks": {k: config[k] for k in keys if config.get(k)}}


def _keep_or_write_config(
    out: Path, radii: Mapping[str, float], weights: Mapping[str, float]
) -> None:
    """A copick config naming the particle types and their score weights in ``out``; one
    already there (``predict --out`` into the project itself) is the user's and stays as it
    is, with a warning if it lacks a predicted type."""
    from streamvol.io import COPICK_CONFIG, read_copick_config
    from streamvol.predict._write import write_copick_config

    existing = out / COPICK_CONFIG
    if not existing.is_file():
        write_copick_config(out, radii, weights)
        return
    missing = sorted(set(radii) - set(read_copick_config(existing)))
    if missing:
        warnings.warn(
            f"{existing}: kept as it is; it does not name {', '.join(missing)}, so copick "
            f"tools will not know those picks",
            stacklevel=3,
        )


def _channel_names(predictor: Predictor) -> list[str]:
    names = list(predictor.class_names)
    if len(names) == predictor.channels:
        return names
    return [f"class{k}" for k in range(predictor.channels)]
