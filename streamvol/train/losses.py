"""Losses for classification and segmentation, each weighting samples so padding (weight 0)
never counts: a batch of only padding contributes exactly zero loss and zero gradient.

Classification logits are (B, C) for C > 1 classes, or (B, 1) / (B,) for binary (one logit);
targets are class ids (B,) or, after MixUp/CutMix, soft targets (B, C). Segmentation logits are
(B, C, D, H, W) with integer masks (B, D, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

LOSSES = ("ce", "focal", "dice", "tversky", "ce+dice", "focal+dice", "ce+tversky")


def _weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_sample.mean()
    weight = weight.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def _soft_targets(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.dtype.is_floating_point and target.ndim >= 2 and target.shape[1] == num_classes:
        return target
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).to(torch.float32)


def _binary(logits: torch.Tensor) -> bool:
    return logits.ndim == 1 or logits.shape[1] == 1


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    class_weights: torch.Tensor | None = None,
    gamma: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (BCE for one logit); ``gamma > 0`` makes it the focal loss."""
    if _binary(logits):
        logits = logits.reshape(logits.shape[0], *logits.shape[2:]) if logits.ndim > 1 else logits
        target = target.to(logits.dtype).reshape(logits.shape)
        pos_weight = None
        if class_weights is not None and len(class_weights) == 2:
            pos_weight = (class_weights[1] / class_weights[0]).to(logits.dtype)
        per = F.binary_cross_entropy_with_logits(
            logits, target, reduction="none", pos_weight=pos_weight
        )
        if gamma:
            p = torch.sigmoid(logits)
            pt = p * target + (1 - p) * (1 - target)
            per = per * (1 - pt).pow(gamma)
    else:
        soft = _soft_targets(target, logits.shape[1])
        logp = F.log_softmax(logits, dim=1)
        per = -(soft * logp)
        if class_weights is not None:
            shape = [1, -1] + [1] * (logits.ndim - 2)
            per = per * class_weights.to(per.dtype).reshape(shape)
        if gamma:
            per = per * (1 - logp.exp()).pow(gamma)
        per = per.sum(dim=1)
    per = per.reshape(per.shape[0], -1).mean(dim=1)
    return _weighted_mean(per, weight)


def tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    eps: float = 1.0,
) -> torch.Tensor:
    """1 - Tversky index per sample over foreground classes (alpha = beta = 0.5 is Dice)."""
    if _binary(logits):
        probs = torch.sigmoid(logits.reshape(logits.shape[0], 1, *logits.shape[2:]))
        probs = torch.cat([1 - probs, probs], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    soft = _soft_targets(target, probs.shape[1])
    dims = tuple(range(2, probs.ndim))
    tp = (probs * soft).sum(dims)
    fp = (probs * (1 - soft)).sum(dims)
    fn = ((1 - probs) * soft).sum(dims)
    index = (tp + eps) / (tp + alpha * fp + beta * fn + eps)
    per = 1 - index[:, 1:].mean(dim=1)
    return _weighted_mean(per, weight)


def dice(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss over foreground classes."""
    return tversky(logits, target, weight, alpha=0.5, beta=0.5)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def make_loss(
    name: str,
    *,
    class_weights: Sequence[float] | None = None,
    focal_gamma: float = 2.0,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
) -> LossFn:
    """A loss by name: ``ce``, ``focal``, ``dice``, ``tversky``, or a ``+`` sum of two."""
    if name not in LOSSES:
        raise ValueError(f"loss {name!r}: expected one of {', '.join(LOSSES)}")
    cw = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None

    def part(piece: str) -> LossFn:
        if piece == "ce":
            return lambda lo, t, w: cross_entropy(lo, t, w, class_weights=_on(cw, lo))
        if piece == "focal":
            return lambda lo, t, w: cross_entropy(
                lo, t, w, class_weights=_on(cw, lo), gamma=focal_gamma
            )
        if piece == "dice":
            return dice
        return lambda lo, t, w: tversky(lo, t, w, alpha=tversky_alpha, beta=tversky_beta)

    pieces = [part(p) for p in name.split("+")]

    def loss(
        logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return sum(fn(logits, target, weight) for fn in pieces)  # type: ignore[return-value]

    return loss


def _on(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(like.device)


def class_weights_from_counts(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency class weights normalised to mean 1 (absent classes get weight 0)."""
    total = sum(counts)
    present = [c for c in counts if c]
    raw = [total / (len(present) * c) if c else 0.0 for c in counts]
    mean = sum(raw) / max(len(present), 1)
    return [r / mean if mean else 0.0 for r in raw]
