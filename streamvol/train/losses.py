"""Losses for classification and segmentation, each weighting samples so padding (weight 0)
never counts: a batch of only padding contributes exactly zero loss and zero gradient.

Classification logits are (B, C) for C > 1 classes, or (B, 1) / (B,) for binary (one logit);
targets are class ids (B,) or, after MixUp/CutMix, soft targets (B, C). Segmentation logits are
(B, C, D, H, W) with integer masks (B, D, H, W). Detection (``make_detection_loss``): a sphere
class map (B, D, H, W) against P + 1 logits (background first), or Gaussian heatmaps
(B, P, D, H, W) in [0, 1] against P independent sigmoid logits.

A loss name is one piece or a ``+`` sum of pieces, e.g. ``ce+dice`` or ``ce+tversky+dice``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from streamvol.errors import BadOption

LOSSES = ("ce", "focal", "dice", "tversky", "ce+dice", "focal+dice", "ce+tversky")
PIECES = ("ce", "focal", "dice", "tversky")
DETECTION_PIECES = {"sphere": ("ce", "focal", "dice", "tversky"), "heatmap": (*PIECES, "mse")}


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
    """A loss by name: ``ce``, ``focal``, ``dice``, ``tversky``, or a ``+`` sum of them."""
    _pieces(name, PIECES)
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


def _pieces(name: str, allowed: Sequence[str], context: str = "") -> list[str]:
    pieces = [p.strip() for p in name.split("+")]
    if not name or any(p not in allowed for p in pieces):
        raise BadOption(
            "loss",
            name,
            f"expected one of {', '.join(allowed)} or a '+' sum of them "
            f"(e.g. {allowed[0]}+{allowed[2]}){context}",
        )
    return pieces


# --- detection ----------------------------------------------------------------------------------


def heatmap_focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on Gaussian heatmaps (peaks exactly 1): positives
    ``-(1 - p)^alpha log p``, elsewhere ``-(1 - y)^beta p^alpha log(1 - p)``, summed per sample
    and divided by its number of peaks (at least 1)."""
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    p = logp.exp()
    pos = target >= 1.0
    loss = torch.where(
        pos,
        -((1 - p) ** alpha) * logp,
        -((1 - target) ** beta) * (p**alpha) * log1mp,
    )
    per = loss.reshape(loss.shape[0], -1).sum(1) / pos.reshape(pos.shape[0], -1).sum(1).clamp_min(1)
    return _weighted_mean(per, weight)


def heatmap_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    pos_weight: float = 1.0,
) -> torch.Tensor:
    """Binary cross-entropy per voxel and channel against soft targets, positives (the target
    part) weighted by ``pos_weight``."""
    pw = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pw)
    return _weighted_mean(per.reshape(per.shape[0], -1).mean(1), weight)


def heatmap_mse(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    pos_weight: float = 1.0,
) -> torch.Tensor:
    """Squared error of sigmoid probabilities against the heatmap, each voxel weighted by
    ``1 + (pos_weight - 1) * target`` so the rare peaks are not drowned by the background."""
    err = (torch.sigmoid(logits) - target) ** 2 * (1 + (pos_weight - 1) * target)
    return _weighted_mean(err.reshape(err.shape[0], -1).mean(1), weight)


def multilabel_tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    eps: float = 1.0,
) -> torch.Tensor:
    """1 - Tversky index per sample, averaged over independent sigmoid channels and soft
    targets (alpha = beta = 0.5 is Dice)."""
    probs = torch.sigmoid(logits)
    dims = tuple(range(2, probs.ndim))
    tp = (probs * target).sum(dims)
    fp = (probs * (1 - target)).sum(dims)
    fn = ((1 - probs) * target).sum(dims)
    index = (tp + eps) / (tp + alpha * fp + beta * fn + eps)
    return _weighted_mean(1 - index.mean(dim=1), weight)


def make_detection_loss(
    name: str,
    target: str,
    num_types: int,
    *,
    pos_weight: float = 256.0,
    focal_gamma: float = 2.0,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
) -> LossFn:
    """A detection loss by name (a ``+`` sum of pieces) for ``target`` ``sphere`` or ``heatmap``.

    sphere (P + 1 softmax channels, background first): ``ce`` weighted ``[1, pos_weight, ...]``,
    ``focal`` (the same, times ``(1 - p)^gamma``), ``dice`` and ``tversky`` over the particle
    channels. heatmap (P sigmoid channels): ``ce`` (BCE, positives weighted by ``pos_weight``),
    ``focal`` (CenterNet), ``mse`` (positives weighted), ``dice`` and ``tversky``.
    """
    if target not in DETECTION_PIECES:
        raise BadOption("target", target, f"expected one of {', '.join(DETECTION_PIECES)}")
    pieces = _pieces(name, DETECTION_PIECES[target], f" for the {target} target")
    if not (pos_weight > 0):
        raise BadOption("pos_weight", pos_weight, "expected a positive weight")
    if not (tversky_alpha >= 0 and tversky_beta >= 0 and tversky_alpha + tversky_beta > 0):
        raise BadOption(
            "tversky_alpha",
            tversky_alpha,
            f"expected weights >= 0, not both 0 (tversky_beta={tversky_beta})",
        )
    table: dict[str, LossFn]
    if target == "sphere":
        cw = torch.tensor([1.0] + [float(pos_weight)] * num_types)
        table = {
            "ce": lambda lo, t, w: cross_entropy(lo, t, w, class_weights=_on(cw, lo)),
            "focal": lambda lo, t, w: cross_entropy(
                lo, t, w, class_weights=_on(cw, lo), gamma=focal_gamma
            ),
            "dice": dice,
            "tversky": lambda lo, t, w: tversky(lo, t, w, alpha=tversky_alpha, beta=tversky_beta),
        }
    else:
        table = {
            "ce": lambda lo, t, w: heatmap_bce(lo, t, w, pos_weight=pos_weight),
            "focal": lambda lo, t, w: heatmap_focal(lo, t, w, alpha=focal_gamma),
            "mse": lambda lo, t, w: heatmap_mse(lo, t, w, pos_weight=pos_weight),
            "dice": multilabel_tversky,
            "tversky": lambda lo, t, w: multilabel_tversky(
                lo, t, w, alpha=tversky_alpha, beta=tversky_beta
            ),
        }
    fns = [table[p] for p in pieces]

    def loss(
        logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return sum(fn(logits, target, weight) for fn in fns)  # type: ignore[return-value]

    return loss


# --- reconstruction (autoencoder pretraining) ----------------------------------------------------

RECONSTRUCTION = ("mse", "l1")


def make_reconstruction_loss(name: str) -> LossFn:
    """Mean squared (``mse``) or absolute (``l1``) error per voxel between a reconstruction and
    its target, both (B, C, D, H, W), averaged per sample, then weighted over samples."""
    if name not in RECONSTRUCTION:
        raise BadOption("loss", name, f"reconstruction expects one of {', '.join(RECONSTRUCTION)}")

    def loss(
        output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        diff = output - target.to(output.dtype)
        per = diff.square() if name == "mse" else diff.abs()
        return _weighted_mean(per.reshape(per.shape[0], -1).mean(dim=1), weight)

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
