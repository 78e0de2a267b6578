"""Losses agree with torch's references and ignore padding (weight 0) entirely."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamvol.train.losses import (
    class_weights_from_counts,
    cross_entropy,
    dice,
    make_detection_loss,
    make_loss,
    tversky,
)


def test_ce_equals_torch_for_multiclass_and_binary():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    target = torch.randint(0, 4, (6,))
    assert torch.allclose(cross_entropy(logits, target), F.cross_entropy(logits, target))
    one = torch.randn(6, 1)
    y = torch.randint(0, 2, (6,))
    ref = F.binary_cross_entropy_with_logits(one[:, 0], y.float())
    assert torch.allclose(cross_entropy(one, y), ref)


def test_focal_with_gamma_zero_is_ce_and_down_weights_easy_samples():
    logits = torch.tensor([[4.0, -4.0], [0.1, 0.0]])
    target = torch.tensor([0, 0])
    assert torch.allclose(cross_entropy(logits, target, gamma=0.0), cross_entropy(logits, target))
    assert cross_entropy(logits, target, gamma=2.0) < cross_entropy(logits, target)


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "tversky", "ce+dice"])
def test_padding_contributes_no_loss_and_no_gradient(name):
    torch.manual_seed(1)
    loss = make_loss(name)
    seg = name in ("dice", "tversky", "ce+dice")
    logits = (
        torch.randn(4, 3, 2, 3, 3, requires_grad=True)
        if seg
        else torch.randn(4, 3, requires_grad=True)
    )
    target = torch.randint(0, 3, (4, 2, 3, 3) if seg else (4,))
    weight = torch.tensor([1.0, 1.0, 0.0, 0.0])
    full = loss(logits, target, weight)
    full.backward()
    assert torch.count_nonzero(logits.grad[2:]) == 0
    real_only = loss(logits[:2].detach(), target[:2], None)
    assert torch.allclose(full.detach(), real_only, atol=1e-6)


def test_dice_is_zero_for_a_perfect_prediction_and_tversky_generalises_it():
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3, 1:3] = 1
    logits = torch.stack([(target == 0).float(), (target == 1).float()], dim=1) * 50
    assert dice(logits, target) < 1e-3
    random = torch.randn(1, 2, 4, 4, 4)
    assert torch.allclose(tversky(random, target, alpha=0.5, beta=0.5), dice(random, target))


def test_class_weights_inverse_frequency_and_unknown_loss():
    w = class_weights_from_counts([30, 10])
    assert w[1] == pytest.approx(3 * w[0]) and sum(w) / 2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'hinge'"):
        make_loss("hinge")


# --- detection ----------------------------------------------------------------------------------


def _sphere_batch(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(4, 3, 3, 4, 4, requires_grad=True), torch.randint(0, 3, (4, 3, 4, 4))


def _heatmap_batch(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    target = torch.rand(4, 2, 3, 4, 4) ** 4
    target[:, :, 1, 2, 2] = 1.0  # one peak per channel
    return torch.randn(4, 2, 3, 4, 4, requires_grad=True), target


def test_sphere_ce_weights_particles_by_pos_weight_as_torch_does():
    logits, target = _sphere_batch()
    loss = make_detection_loss("ce", "sphere", 2, pos_weight=256.0)
    weight = torch.tensor([1.0, 256.0, 256.0])
    ref = F.cross_entropy(logits, target, weight=weight, reduction="none").mean()
    assert torch.allclose(loss(logits, target), ref)


def test_heatmap_ce_focal_and_mse_against_formulas():
    logits, target = _heatmap_batch()
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.tensor(8.0), reduction="none"
    ).mean()
    assert torch.allclose(
        make_detection_loss("ce", "heatmap", 2, pos_weight=8.0)(logits, target), bce
    )
    mse = ((p - target) ** 2 * (1 + 7 * target)).mean()
    assert torch.allclose(
        make_detection_loss("mse", "heatmap", 2, pos_weight=8.0)(logits, target), mse
    )
    pos = target == 1
    per = torch.where(
        pos, -((1 - p) ** 2) * torch.log(p), -((1 - target) ** 4) * p**2 * torch.log(1 - p)
    )
    focal = (per.sum((1, 2, 3, 4)) / pos.sum((1, 2, 3, 4))).mean()
    assert torch.allclose(
        make_detection_loss("focal", "heatmap", 2)(logits, target), focal, atol=1e-6
    )


@pytest.mark.parametrize("target_kind", ["sphere", "heatmap"])
@pytest.mark.parametrize("name", ["ce", "focal", "dice", "tversky", "ce+tversky+dice"])
def test_detection_padding_contributes_no_loss_and_no_gradient(target_kind, name):
    logits, target = _sphere_batch() if target_kind == "sphere" else _heatmap_batch()
    loss = make_detection_loss(name, target_kind, 2, tversky_alpha=0.2, tversky_beta=0.8)
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    full = loss(logits, target, weight)
    full.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0 and torch.count_nonzero(logits.grad[3]) == 0
    real = loss(logits[[0, 2]].detach(), target[[0, 2]], None)
    assert torch.allclose(full.detach(), real, atol=1e-6)


def test_detection_sums_tversky_settings_and_names():
    logits, target = _heatmap_batch()
    total = make_detection_loss("ce+dice", "heatmap", 2)(logits, target)
    parts = sum(make_detection_loss(n, "heatmap", 2)(logits, target) for n in ("ce", "dice"))
    assert torch.allclose(total, parts)
    dice_ = make_detection_loss("dice", "heatmap", 2)(logits, target)
    half = make_detection_loss("tversky", "heatmap", 2, tversky_alpha=0.5, tversky_beta=0.5)
    assert torch.allclose(half(logits, target), dice_)
    fn_heavy = make_detection_loss("tversky", "heatmap", 2, tversky_alpha=0.0, tversky_beta=1.0)
    assert not torch.allclose(fn_heavy(logits, target), dice_)
    with pytest.raises(ValueError, match="'mse'"):
        make_detection_loss("mse", "sphere", 2)
    with pytest.raises(ValueError, match="'ce\\+hinge'"):
        make_detection_loss("ce+hinge", "heatmap", 2)
    assert make_loss("ce+tversky+dice")(*_sphere_batch()) > 0  # any sum of pieces
