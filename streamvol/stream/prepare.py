"""The last stage of a sample: from a decoded stored sample to a training sample.

One stage per kind of work, each a picklable frozen dataclass called as
``stage(sample, epoch, into=None)``:

- ``CentreCrop``: no augmentation; the stored block without its margin, normalised.
- ``AugmentOnCPU``: parameters drawn from ``(seed, epoch, key)``, applied in one fused numba
  pass (resample, normalise, intensity, noise), written straight into ``into`` (the sample's
  slot of the batch being assembled) when given.
- ``ForDevice``: the stored block kept as it is, with its drawn parameters, for
  ``DevicePrefetcher`` to augment on the device (without a spec: decoding only).

A region set's image and mask arrive as ``Window``s (``streamvol.stream.draw``) and are cut
here: the CPU augmentation cuts only the part its drawn geometry reads (gamma and contrast
still take the whole block's statistics, as on the device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from streamvol.core.geometry import inside
from streamvol.core.manifest import normalization
from streamvol.core.rng import sample_rng
from streamvol.stream.draw import Window

Zyx = tuple[int, int, int]


@dataclass(frozen=True)
class Normalize:
    """``(value - offset) * scale``: the shard set's mean and 1 / std by default."""

    offset: float = 0.0
    scale: float = 1.0

    @classmethod
    def of(cls, manifest: Mapping[str, Any], normalize: bool | tuple[float, float]) -> Normalize:
        """The manifest's statistics (``True``: ``normalization``, for every stored dtype),
        none (``False``), or a given (mean, std)."""
        if isinstance(normalize, tuple):
            return cls(float(normalize[0]), 1.0 / float(normalize[1]))
        return cls(*normalization(manifest)) if normalize else cls()


def _base(sample: dict[str, Any]) -> dict[str, Any]:
    out = {"__key__": sample["__key__"], "__pos__": sample["__pos__"], "weight": sample["weight"]}
    if "cls" in sample:
        out["label"] = sample["cls"]
    return out


def _blocks(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The stored image as (C, D, H, W) and the mask, cut when they are windows."""
    image, mask = sample["image.npy"], sample.get("mask.npy")
    if isinstance(image, Window):
        image, mask = image.cut(), None if mask is None else mask.cut()
    return (image[None] if image.ndim == 3 else image), mask


def _centre(block: np.ndarray, crop: Sequence[int] | None) -> np.ndarray:
    """The central ``crop`` of a (C, D, H, W) block: the stored block without its margin."""
    if crop is None:
        return block
    starts = [(n - c) // 2 for n, c in zip(block.shape[1:], crop, strict=True)]
    return block[(slice(None), *(slice(s, s + c) for s, c in zip(starts, crop, strict=True)))]


def _shift_points(
    points: np.ndarray, stored: Sequence[int], crop: Sequence[int] | None
) -> np.ndarray:
    if crop is None:
        return points
    starts = np.array([(n - c) // 2 for n, c in zip(stored, crop, strict=True)], np.float32)
    moved = points.copy()
    moved[:, :3] -= starts
    return moved[inside(moved, (0, 0, 0), crop)]


@dataclass(frozen=True)
class CentreCrop:
    """No augmentation: the central crop of the stored block, normalised, as float32."""

    crop: Zyx | None
    normalize: Normalize = field(default_factory=Normalize)
    out_shape: None = None  # writes no batch slot of its own

    def __call__(
        self, sample: dict[str, Any], epoch: int, into: torch.Tensor | None = None
    ) -> dict[str, Any]:
        out = _base(sample)
        image, mask = _blocks(sample)
        block = _centre(image, self.crop)
        norm = self.normalize
        out["image"] = torch.from_numpy((block.astype(np.float32) - norm.offset) * norm.scale)
        if mask is not None:
            out["mask"] = torch.from_numpy(_centre(mask[None], self.crop)[0].astype(np.int64))
        points = sample.get("points.npy")
        if points is not None:
            out["points"] = torch.from_numpy(_shift_points(points, image.shape[1:], self.crop))
        return out


@dataclass(frozen=True)
class AugmentOnCPU:
    """Fresh augmentation in one fused CPU pass; the image lands in ``into`` when given."""

    crop: Zyx
    augment: Any
    seed: int = 0
    normalize: Normalize = field(default_factory=Normalize)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The image shape this stage writes (into a batch slot when the loader gives one)."""
        return (1, *self.crop)

    def __call__(
        self, sample: dict[str, Any], epoch: int, into: torch.Tensor | None = None
    ) -> dict[str, Any]:
        from streamvol.augment import apply_cpu

        out = _base(sample)
        image, mask = sample["image.npy"], sample.get("mask.npy")
        points = sample.get("points.npy")
        rng = sample_rng(self.seed, epoch, sample["__key__"])
        params = self.augment.sample(rng, image.shape[-3:], self.crop)
        windowed, stats = isinstance(image, Window), None
        if windowed:  # cut only what this draw reads, and read it from there
            start, stop = params.reads()
            if params.needs_block_stats:  # gamma and contrast take the whole block's
                stats = image.stats()
            image = image.cut(start, stop)
            mask = None if mask is None else mask.cut(start, stop)
            if points is not None:
                points = points - np.array([*start, 0], np.float32)
            params = params.within(start, stop)
        done = apply_cpu(
            {"image": image, "mask": mask, "points": points},
            params,
            offset=self.normalize.offset,
            scale=self.normalize.scale,
            out=None if into is None else into.numpy(),
            # a stored block comes from the page cache, not the CPU's caches, unless its
            # checksum has just read it through
            prefetch=not windowed and not sample.get("__warm__"),
            stats=stats,
        )
        out["image"] = torch.from_numpy(done["image"]) if into is None else into
        if done.get("mask") is not None:
            out["mask"] = torch.from_numpy(done["mask"])
        if done.get("points") is not None:
            out["points"] = torch.from_numpy(done["points"])
        return out


@dataclass(frozen=True)
class ForDevice:
    """The stored block as it is, with its drawn parameters (``params``) when there is a spec:
    ``DevicePrefetcher`` augments and normalises the batch on the device."""

    crop: Zyx | None
    augment: Any = None
    seed: int = 0
    normalize: Normalize = field(default_factory=Normalize)
    out_shape: None = None

    def __call__(
        self, sample: dict[str, Any], epoch: int, into: torch.Tensor | None = None
    ) -> dict[str, Any]:
        out = _base(sample)
        image, mask = _blocks(sample)
        out["image"] = torch.from_numpy(np.ascontiguousarray(image))
        if mask is not None:
            out["mask"] = torch.from_numpy(mask.astype(np.int64))
        points = sample.get("points.npy")
        if points is not None:
            out["points"] = torch.from_numpy(points)
        if self.augment is not None:
            rng = sample_rng(self.seed, epoch, sample["__key__"])
            out["params"] = self.augment.sample(rng, image.shape[1:], self.crop)
        return out


Prepare = CentreCrop | AugmentOnCPU | ForDevice


def make_prepare(
    crop: Zyx | None,
    normalize: Normalize,
    *,
    augment: Any = None,
    augment_device: str = "cpu",
    seed: int = 0,
    decode_only: bool = False,
) -> Prepare:
    """The stage for these settings (see the module docstring)."""
    if decode_only:
        return ForDevice(crop, None, seed, normalize)
    if augment is None:
        return CentreCrop(crop, normalize)
    if augment_device == "gpu":
        return ForDevice(crop, augment, seed, normalize)
    return AugmentOnCPU(crop, augment, seed, normalize)  # type: ignore[arg-type]
