"""Batch-level mixing: mixup and cutmix (a 3D box), pure functions of a batch and a generator.

They run after collation (on the CPU or the device); the generator is the caller's, keyed like
every other draw (for instance from ``(seed, epoch, batch index)``). Each returns the partner
permutation and the per-sample weight ``lam`` of the original sample, so a loss can mix its
targets: ``lam * loss(y) + (1 - lam) * loss(y[perm])``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamvol.augment._spec import Augment
from streamvol.errors import BadInput, BadOption

__all__ = ["cutmix", "mix_batch", "mixup"]


def _check(images: torch.Tensor) -> int:
    if images.ndim != 5:
        raise BadInput(f"expected images (B, C, D, H, W), got {tuple(images.shape)}")
    return int(images.shape[0])


def mixup(
    images: torch.Tensor, rng: np.random.Generator, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)`` per sample.

    Returns (mixed images, perm (B,) int64, lam (B,) float32)."""
    b = _check(images)
    if alpha <= 0:
        raise BadOption("alpha", alpha, "expected > 0 (mixup's Beta)")
    lam = rng.beta(alpha, alpha, size=b).astype(np.float32)
    perm = torch.from_numpy(rng.permutation(b)).to(images.device)
    w = torch.from_numpy(lam).to(images.device, images.dtype).view(b, 1, 1, 1, 1)
    mixed = w * images + (1 - w) * images[perm]
    return mixed, perm, torch.from_numpy(lam).to(images.device)


def cutmix(
    images: torch.Tensor,
    rng: np.random.Generator,
    alpha: float,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Paste into each sample a box of its partner ``x[perm]``: box volume fraction
    ``1 - lam``, ``lam ~ Beta(alpha, alpha)``, same aspect as the volume, centre uniform and
    the box clipped to the volume; masks (B, D, H, W) get the same boxes.

    Returns (images, masks or None, perm (B,) int64, lam (B,) float32: the kept fraction)."""
    b = _check(images)
    if alpha <= 0:
        raise BadOption("alpha", alpha, "expected > 0 (cutmix's Beta)")
    shape = images.shape[2:]
    lam = rng.beta(alpha, alpha, size=b)
    perm_np = rng.permutation(b)
    centres = rng.random((b, 3))
    out = images.clone()
    out_masks = masks.clone() if masks is not None else None
    kept = np.empty(b, np.float32)
    for i in range(b):
        side = (1.0 - lam[i]) ** (1.0 / 3.0)
        box = []
        for n, c in zip(shape, centres[i], strict=True):
            half = side * n / 2.0
            lo = int(np.clip(round(c * n - half), 0, n))
            hi = int(np.clip(round(c * n + half), 0, n))
            box.append(slice(lo, hi))
        j = int(perm_np[i])
        out[(i, slice(None), *box)] = images[(j, slice(None), *box)]
        if out_masks is not None:
            out_masks[(i, *box)] = masks[(j, *box)]
        volume = np.prod([s.stop - s.start for s in box])
        kept[i] = 1.0 - volume / np.prod(shape)
    perm = torch.from_numpy(perm_np).to(images.device)
    return out, out_masks, perm, torch.from_numpy(kept).to(images.device)


def mix_batch(
    spec: Augment,
    images: torch.Tensor,
    rng: np.random.Generator,
    masks: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Apply the spec's batch step: cutmix with probability ``cutmix.p`` (when its alpha > 0),
    else mixup with probability ``mixup.p`` (when its alpha > 0), else nothing (perm identity,
    lam 1). Masks are only changed by cutmix. Returns image, mask, perm, lam."""
    b = _check(images)
    if spec.cutmix.alpha > 0 and rng.random() < spec.cutmix.p:
        image, mask, perm, lam = cutmix(images, rng, spec.cutmix.alpha, masks)
        return {"image": image, "mask": mask, "perm": perm, "lam": lam}
    if spec.mixup.alpha > 0 and rng.random() < spec.mixup.p:
        image, perm, lam = mixup(images, rng, spec.mixup.alpha)
        return {"image": image, "mask": masks, "perm": perm, "lam": lam}
    identity = torch.arange(b, device=images.device)
    return {
        "image": images,
        "mask": masks,
        "perm": identity,
        "lam": torch.ones(b, device=images.device),
    }
