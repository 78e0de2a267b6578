"""Losses agree with torch's references and ignore padding (weight 0) entirely."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamvol.train.losses import (
    class_weights_from_counts,
    cross_entropy,
    dice,
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
