"""Batch mixing: mixup and cutmix are pure functions of the batch and the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvol.augment import Augment, cutmix, mix_batch, mixup


def _batch(b: int = 4, shape=(6, 8, 10)) -> torch.Tensor:
    # sample i is the constant i, so every output voxel says where it came from
    return torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 1, *shape).clone()


def test_mixup_blends_with_the_permuted_partner():
    images = _batch()
    mixed, perm, lam = mixup(images, np.random.default_rng(0), alpha=0.4)
    want = lam.view(-1, 1, 1, 1, 1) * images + (1 - lam.view(-1, 1, 1, 1, 1)) * images[perm]
    torch.testing.assert_close(mixed, want)
    assert sorted(perm.tolist()) == [0, 1, 2, 3] and ((lam >= 0) & (lam <= 1)).all()


def test_cutmix_pastes_a_box_and_lam_is_the_kept_fraction():
    images = _batch()
    masks = images[:, 0].long() * 10
    out, out_masks, perm, lam = cutmix(images, np.random.default_rng(1), alpha=1.0, masks=masks)
    for i in range(4):
        j = int(perm[i])
        from_partner = out[i, 0] == j
        if i != j:
            assert abs(1 - from_partner.float().mean().item() - lam[i].item()) < 1e-6
            box = torch.nonzero(from_partner)
            if len(box):  # one axis-aligned box
                lo, hi = box.min(0).values, box.max(0).values
                assert int(from_partner.sum()) == int(torch.prod(hi - lo + 1))
        assert torch.equal(out_masks[i], out[i, 0].long() * 10)


def test_same_generator_same_mix_and_inputs_untouched():
    images = _batch()
    before = images.clone()
    a = cutmix(images, np.random.default_rng(5), alpha=1.0)
    b = cutmix(images, np.random.default_rng(5), alpha=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert torch.equal(images, before)


def test_mix_batch_follows_the_spec():
    images = _batch()
    off = mix_batch(Augment(), images, np.random.default_rng(0))
    assert torch.equal(off["image"], images) and (off["lam"] == 1).all()
    spec = Augment.from_dict({"cutmix": {"alpha": 1.0, "p": 1.0}})
    on = mix_batch(spec, images, np.random.default_rng(0), masks=images[:, 0].long())
    assert not torch.equal(on["image"], images) or (on["perm"] == torch.arange(4)).all()
    spec = Augment.from_dict({"mixup": {"alpha": 0.4}})
    assert (mix_batch(spec, images, np.random.default_rng(0))["lam"] < 1).any()


def test_mixing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        mixup(torch.zeros(2, 4, 4, 4), np.random.default_rng(0), 0.4)
    with pytest.raises(ValueError, match="alpha"):
        cutmix(_batch(), np.random.default_rng(0), 0.0)
