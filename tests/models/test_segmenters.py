"""Every classifier's per-voxel form (``task="segment"``): the light decoder over its feature
levels gives the mask's shape for any crop, odd sides too, and a tiny one learns a mask."""

from __future__ import annotations

import pytest
import torch

from streamvol import models
from streamvol.errors import BadOption

SMALL = {
    "simple_cnn": {},
    "se_resnet3d": {"widths": (4, 8, 8), "decoder_width": 8},
    "vgg3d": {"convs_per_level": (1, 1), "base_width": 4, "decoder_width": 8},
    "resnet3d": {"width": 4, "decoder_width": 8},
    "resnet3d-mc3": {"width": 4, "decoder_width": 8, "variant": "mc3_18", "norm": "group"},
    "resnet3d-2plus1d": {"width": 4, "decoder_width": 8, "variant": "r2plus1d_18"},
}


def _build(key: str, **kw):
    return models.build(key.split("-")[0], task="segment", **SMALL[key], **kw)


@pytest.mark.parametrize("key", list(SMALL))
@pytest.mark.parametrize("shape", [(9, 11, 13), (8, 16, 16), (7, 15, 17)])
def test_output_has_the_mask_shape_for_any_crop(key: str, shape: tuple[int, int, int]) -> None:
    model = _build(key, num_classes=3).eval()
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)
    assert model.num_outputs == 3 and isinstance(model.head, torch.nn.Conv3d)


@pytest.mark.parametrize("key", ["simple_cnn", "resnet3d"])
def test_segment_form_shares_the_classifier_feature_weights(key: str) -> None:
    name = key.split("-")[0]
    classifier = models.build(name, num_classes=2, **SMALL[key])
    segmenter = _build(key, num_classes=2)
    features = {k for k in classifier.state_dict() if k.startswith("features.")}
    assert features and features <= set(segmenter.state_dict())
    for k in features:
        assert segmenter.state_dict()[k].shape == classifier.state_dict()[k].shape


@pytest.mark.parametrize("key", ["simple_cnn", "resnet3d"])
def test_a_tiny_segmenter_learns_a_mask_above_chance(key: str) -> None:
    """Bright cubes on noise: after 60 steps the foreground Dice beats the all-foreground
    guess (chance) by a margin."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 9, 15, 15, generator=g) * 0.3
    mask = torch.zeros(8, 9, 15, 15, dtype=torch.long)
    for i in range(8):
        z, y, xx = (int(v) for v in torch.randint(0, 5, (3,), generator=g))
        mask[i, z : z + 4, y + 2 : y + 9, xx + 2 : xx + 9] = 1
    x = x + 1.5 * mask[:, None].float()
    model = _build(key, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = model.eval()(x).argmax(1)
    dice = 2 * ((pred == 1) & (mask == 1)).sum() / ((pred == 1).sum() + (mask == 1).sum())
    chance = 2 * mask.float().mean() / (1 + mask.float().mean())
    assert dice > chance + 0.3, (float(dice), float(chance))


def test_segment_form_refuses_a_segment_task_typo() -> None:
    with pytest.raises(BadOption, match="task='segmentation': expected 'classify' or 'segment'"):
        models.build("simple_cnn", num_classes=2, task="segmentation")
