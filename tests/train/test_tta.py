"""Test-time augmentation of crops: every view is undone by its inverse, the kinds hold the
transforms they promise, turns need square y-x crops, and the names read as the whole-volume
path spells them."""

from __future__ import annotations

import pytest
import torch

from streamvol.errors import BadOption
from streamvol.train import tta


@pytest.mark.parametrize(("kind", "count"), [(None, 1), ("flips", 8), ("rot90z", 4), ("all", 16)])
def test_each_kind_holds_distinct_invertible_views(kind, count):
    x = torch.randn(2, 1, 3, 5, 5)
    views = tta.transforms(kind, x.shape[2:])
    assert len(views) == count
    seen = {tuple(f(x).flatten().tolist()) for f, _ in views}
    assert len(seen) == count  # no view repeats another
    for forward, inverse in views:
        assert torch.equal(inverse(forward(x)), x)


def test_turns_keep_z_and_all_is_flips_with_turns():
    x = torch.randn(1, 1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for forward, _ in tta.transforms("rot90z", x.shape[2:]):
        # slice by slice: each z slice keeps its values (sums in another order: rounding)
        assert torch.allclose(forward(x).sum(dim=(3, 4)), x.sum(dim=(3, 4)), atol=1e-5)
    flips = {tuple(f(x).flatten().tolist()) for f, _ in tta.transforms("flips", x.shape[2:])}
    both = {tuple(f(x).flatten().tolist()) for f, _ in tta.transforms("all", x.shape[2:])}
    assert flips <= both


def test_turns_need_square_crops_and_names_are_checked():
    with pytest.raises(BadOption, match=r"square y-x crops, got \(9, 11, 13\)"):
        tta.transforms("rot90z", (9, 11, 13))
    assert len(tta.transforms("flips", (9, 11, 13))) == 8
    assert tta.parse(True) == "flips" and tta.parse(False) is None and tta.parse("none") is None
    assert tta.parse("rot90") == "rot90z" and tta.parse("flips,rot90") == "all"
    with pytest.raises(BadOption, match="tta='mirror': expected one of none, flips, rot90z, all"):
        tta.parse("mirror")
