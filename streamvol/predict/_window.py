"""Sliding-window inference over a whole volume, with Gaussian blending and test-time augmentation.

Windows of ``patch`` voxels step by ``patch * (1 - overlap)`` (rounded, at least 1) from 0, and a
last window sits flush with the far edge, so every voxel is covered; an axis shorter than the
patch is padded (reflect) to it and cropped back. Each window's output is weighted by an
importance map (per axis a Gaussian of sigma ``patch / 8``, peak 1, floored at 0.01 so edges
still count; or constant) and the sum is divided by the summed weights: a voxel's value is the
weighted mean of every window that saw it. The summed weights factorise over the axes, and
windows run in z order, so planes are read and finished as the windows pass them
(``sliding_window_slabs``): memory is a few windows' depth of planes, whatever the volume's
depth and the number of windows.

TTA: ``flips`` adds the three single-axis mirrors, ``rot90`` the 90, 180 and 270 degree turns
about z (in the y-x plane); each prediction is mapped back by the inverse before averaging.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamvol.errors import BadInput, BadOption

BLENDS = ("gaussian", "constant")
TTA_KINDS = ("flips", "rot90")
_FLOOR = 0.01  # per axis: a corner of the map weighs 1e-6

Progress = Callable[[int, int], None]
Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Window:
    """Sliding-window settings: patch (z, y, x), fractional overlap, windows per batch,
    blending, and the TTA kinds (a subset of ``TTA_KINDS``)."""

    patch: tuple[int, int, int]
    overlap: float = 0.25
    batch_size: int = 4
    blend: str = "gaussian"
    tta: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        patch = tuple(int(p) for p in self.patch)
        if len(patch) != 3 or min(patch) < 1:
            raise BadOption("patch", self.patch, "expected 3 positive sizes (z, y, x)")
        object.__setattr__(self, "patch", patch)
        if not (0 <= self.overlap < 1):
            raise BadOption("overlap", self.overlap, "expected a fraction in [0, 1)")
        if self.batch_size < 1:
            raise BadOption("batch_size", self.batch_size, "expected >= 1 windows")
        if self.blend not in BLENDS:
            raise BadOption("blend", self.blend, f"expected one of {', '.join(BLENDS)}")
        tta = tuple(dict.fromkeys(t for t in self.tta if t and t != "none"))
        unknown = [t for t in tta if t not in TTA_KINDS]
        if unknown:
            raise BadOption(
                "tta",
                self.tta,
                f"unknown {unknown}; expected none or a comma list of {', '.join(TTA_KINDS)}",
            )
        object.__setattr__(self, "tta", tta)


def parse_tta(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"flips,rot90"`` -> ``("flips", "rot90")``; ``none`` or empty -> ``()``. The crops'
    names (``evaluate --tta``) read the same: ``rot90z`` is ``rot90``, ``all`` both."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for part in (p.strip() for p in parts):
        out += {"rot90z": ["rot90"], "all": ["flips", "rot90"]}.get(part, [part])
    return tuple(dict.fromkeys(p for p in out if p and p != "none"))


def window_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Start of every window along an axis of ``length``: a step of ``patch * (1 - overlap)``
    from 0, and the last window flush with the end (one window at 0 when ``patch >= length``)."""
    if patch >= length:
        return [0]
    step = max(1, round(patch * (1 - overlap)))
    starts = list(range(0, length - patch + 1, step))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def importance_profiles(patch: Sequence[int], blend: str = "gaussian") -> list[np.ndarray]:
    """The importance map's factor along each axis (float64): a Gaussian of sigma n / 8, peak
    1, floored at 0.01, or ones."""
    profiles = []
    for n in patch:
        if blend == "constant":
            profiles.append(np.ones(n))
            continue
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        g = np.exp(-0.5 * (x / max(n / 8, 1e-6)) ** 2)
        profiles.append(np.maximum(g / g.max(), _FLOOR))
    return profiles


def importance_map(patch: Sequence[int], blend: str = "gaussian") -> np.ndarray:
    """Per-voxel weight of a window's output: the outer product of ``importance_profiles``."""
    wz, wy, wx = importance_profiles(patch, blend)
    return (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).astype(np.float32)


def tta_transforms(kinds: Sequence[str]) -> list[Transform]:
    """(forward, inverse) pairs on (B, C, D, H, W) tensors, identity first."""
    out: list[Transform] = [(lambda t: t, lambda t: t)]
    if "flips" in kinds:
        for dim in (2, 3, 4):
            out.append((_flip(dim), _flip(dim)))
    if "rot90" in kinds:
        for k in (1, 2, 3):
            out.append((_rot(k), _rot(-k)))
    return out


def _flip(dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t.flip(dim)


def _rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: torch.rot90(t, k, dims=(3, 4))


def _boxes(shape: Sequence[int], window: Window) -> list[tuple[int, int, int]]:
    axes = [window_starts(n, p, window.overlap) for n, p in zip(shape, window.patch, strict=True)]
    return [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]


def count_windows(shape: Sequence[int], window: Window) -> int:
    """How many model calls ``sliding_window`` makes for a volume of ``shape`` (windows x TTA)."""
    padded = [max(n, p) for n, p in zip(shape, window.patch, strict=True)]
    return len(_boxes(padded, window)) * len(tta_transforms(window.tta))


def sliding_window(
    volume: Any,
    predict: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
    window: Window,
    *,
    device: str | torch.device = "cpu",
    amp: torch.dtype | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Blend ``predict`` over ``volume`` (D, H, W), float32, already normalised as the model
    expects (or a volume as ``sliding_window_slabs`` takes it); returns (channels, D, H, W)
    float32. The windows' sums accumulate in the output itself: memory is the output and a
    batch's depth of input planes.

    ``predict`` maps a batch (B, 1, pz, py, px) on ``device`` to (B, channels, pz, py, px)
    (probabilities, say). ``amp`` (a dtype) autocasts on CUDA only. ``progress(done, total)``
    counts model calls.
    """
    shape, full = _padded(volume.shape, window)
    sums = _Planes((channels,), full[0], full[1:], keep=True)
    for _ in _blend(volume, predict, channels, window, device, amp, progress, sums):
        pass  # each finished slab is normalised in place: the sums become the output
    if full == shape:
        return sums.buffer
    return np.ascontiguousarray(sums.buffer[:, : shape[0], : shape[1], : shape[2]])


def sliding_window_slabs(
    volume: Any,
    predict: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
    window: Window,
    *,
    device: str | torch.device = "cpu",
    amp: torch.dtype | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``sliding_window`` along z in finished slabs: yields ``(z0, (channels, n, H, W))`` in
    order, each plane once, as soon as no later window reaches it.

    ``volume`` is anything with a (D, H, W) ``shape`` whose ``[z0:z1]`` gives those planes
    (numpy, dask, zarr, a lazily normalised volume), and it is read once, in order. So memory is
    a few windows' depth of planes however deep the volume: a stack of any size is predicted
    plane block by plane block and written as it goes.
    """
    shape = _padded(volume.shape, window)[0]
    for z0, slab in _blend(volume, predict, channels, window, device, amp, progress):
        end = min(z0 + slab.shape[1], shape[0])
        if end > z0:
            yield z0, slab[:, : end - z0, : shape[1], : shape[2]].copy()


@torch.no_grad()
def _blend(
    volume: Any,
    predict: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
    window: Window,
    device: str | torch.device,
    amp: torch.dtype | None,
    progress: Progress | None,
    acc: _Planes | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The sliding window, summing into ``acc`` (default: a buffer of the planes a batch
    reaches): yields each finished slab of the padded volume, normalised in place, as
    ``(z0, planes)``, a view into ``acc``'s buffer."""
    shape, full = _padded(volume.shape, window)
    device = torch.device(device)
    pz, py, px = window.patch
    mode = "reflect" if min(shape) > 1 else "edge"
    pad = [(0, f - n) for n, f in zip(shape, full, strict=True)]

    if full[0] > shape[0]:  # fewer planes than the patch: read them all, pad every axis
        whole = np.pad(np.asarray(volume[:], dtype=np.float32), pad, mode=mode)

        def read(z0: int, z1: int) -> np.ndarray:
            return whole[z0:z1]
    else:

        def read(z0: int, z1: int) -> np.ndarray:
            planes = np.asarray(volume[z0:z1], dtype=np.float32)
            return np.pad(planes, [(0, 0), *pad[1:]], mode=mode) if full != shape else planes

    boxes = _boxes(full, window)
    weight_sums = _weight_sums(full, window)
    weight_t = torch.from_numpy(importance_map(window.patch, window.blend)).to(device)
    transforms = tta_transforms(window.tta)
    total, done = len(boxes) * len(transforms), 0
    autocast = (
        torch.autocast("cuda", dtype=amp)
        if amp is not None and device.type == "cuda"
        else contextlib.nullcontext()
    )
    batches = [boxes[i : i + window.batch_size] for i in range(0, len(boxes), window.batch_size)]
    # a batch reaches from its first window's z (no plane below it is needed any more) to its
    # last window's end: the most planes ever held
    depth = max(group[-1][0] + pz - group[0][0] for group in batches)
    inputs = _Planes((), depth, full[1:])  # planes of the padded volume read
    if acc is None:
        acc = _Planes((channels,), depth, full[1:])  # and summed into
    if progress:
        progress(0, total)
    for i, group in enumerate(batches):
        need = group[-1][0] + pz
        if need > inputs.hi:
            inputs.extend(need, read(inputs.hi, need))
            acc.extend(need)
        lo, planes = inputs.lo, inputs.planes
        block = np.stack(
            [planes[z - lo : z - lo + pz, y : y + py, x : x + px] for z, y, x in group]
        )
        x_in = torch.from_numpy(block)[:, None].to(device, non_blocking=True)
        summed = None
        for forward, inverse in transforms:
            with autocast:
                pred = predict(forward(x_in))
            pred = inverse(pred.float())
            summed = pred if summed is None else summed + pred
            done += len(group)
            if progress:
                progress(done, total)
        assert summed is not None
        if summed.shape[1:] != (channels, pz, py, px):
            raise BadInput(
                f"the model returned {tuple(summed.shape)} for windows of {tuple(x_in.shape)}; "
                f"expected (B, {channels}, {pz}, {py}, {px})"
            )
        weighted = (summed * (weight_t / len(transforms))).cpu().numpy()
        totals = acc.planes
        for (z, y, x), values in zip(group, weighted, strict=True):
            totals[:, z - lo : z - lo + pz, y : y + py, x : x + px] += values
        finished = batches[i + 1][0][0] if i + 1 < len(batches) else full[0]  # no later window
        if finished > lo:
            slab = totals[:, : finished - lo]
            _normalise(slab, lo, weight_sums)
            yield lo, slab
            inputs.drop(finished)
            acc.drop(finished)


class _Planes:
    """Planes ``[lo, hi)`` of a (*lead, D, H, W) volume in a buffer of ``depth`` planes, reused
    as z advances: the buffer is all that is held, however deep the volume. With ``keep`` the
    buffer holds every plane, at its own z, and nothing moves."""

    def __init__(
        self, lead: tuple[int, ...], depth: int, plane: Sequence[int], *, keep: bool = False
    ) -> None:
        self.buffer = np.zeros((*lead, depth, *plane), np.float32)
        self.keep = keep
        self.lo = self.hi = 0

    def _at(self, z: int) -> int:
        return z if self.keep else z - self.lo

    @property
    def planes(self) -> np.ndarray:
        return self.buffer[..., self._at(self.lo) : self._at(self.hi), :, :]

    def extend(self, hi: int, values: np.ndarray | None = None) -> None:
        """Hold planes up to ``hi``: ``values`` (the new planes), else zeros."""
        new = self.buffer[..., self._at(self.hi) : self._at(hi), :, :]
        new[...] = 0 if values is None else values
        self.hi = hi

    def drop(self, lo: int) -> None:
        """Forget the planes below ``lo``, moving the rest to the buffer's front."""
        if not self.keep:
            k, kept = lo - self.lo, self.hi - lo
            self.buffer[..., :kept, :, :] = self.buffer[..., k : k + kept, :, :]  # overlap is fine
        self.lo = lo


def _padded(shape: Sequence[int], window: Window) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(D, H, W) and the padded shape the windows cover (each axis at least the patch)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise BadInput(f"expected a (D, H, W) volume, got shape {shape}")
    return shape, tuple(max(n, p) for n, p in zip(shape, window.patch, strict=True))


def _weight_sums(shape: Sequence[int], window: Window) -> list[np.ndarray]:
    """Per axis, the summed importance profiles of the windows over each position. Windows form
    a grid of per-axis starts and the importance map is a product of per-axis profiles, so the
    summed weights are the outer product of these three: no volume of weights is needed."""
    sums = []
    for n, p, profile in zip(
        shape, window.patch, importance_profiles(window.patch, window.blend), strict=True
    ):
        total = np.zeros(n)
        for start in window_starts(n, p, window.overlap):
            total[start : start + p] += profile
        sums.append(total)
    return sums


def _normalise(slab: np.ndarray, z0: int, sums: Sequence[np.ndarray]) -> None:
    """Divide (channels, n, H, W) planes from ``z0`` by their summed weights, in place."""
    plane = (1.0 / np.outer(sums[1], sums[2])).astype(np.float32)
    for k in range(slab.shape[1]):
        slab[:, k] *= plane * np.float32(1.0 / sums[0][z0 + k])


def check_patch(patch: Sequence[int], multiple: int) -> tuple[int, int, int]:
    """``patch`` as 3 ints, each a positive multiple of ``multiple`` (a U-Net's 2**depth)."""
    size = tuple(int(p) for p in patch)
    if len(size) != 3 or any(p < 1 or p % multiple for p in size):
        raise BadOption(
            "patch",
            tuple(patch),
            f"expected 3 sizes, each a positive multiple of {multiple} (the model halves the "
            f"size {int(math.log2(multiple))} times)",
        )
    return size  # type: ignore[return-value]
