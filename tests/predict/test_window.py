"""Sliding windows: a translation-equivariant model gives exactly what it gives on the whole
volume (edges included), the blend is the Gaussian-weighted mean of the windows (checked against
a loop written out here), and TTA maps each prediction back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvol.errors import BadInput, BadOption
from streamvol.predict import (
    Window,
    count_windows,
    importance_map,
    sliding_window,
    tta_transforms,
    window_starts,
)


def _pointwise(channels: int = 3, seed: int = 0) -> torch.nn.Module:
    """A 1x1x1 conv and a pointwise nonlinearity: translation-equivariant, no context."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, channels, 1), torch.nn.Sigmoid()).eval()


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch", "tta"),
    [
        ((20, 23, 31), (8, 8, 8), 0.25, 3, ()),
        ((9, 40, 17), (8, 16, 16), 0.5, 1, ("flips",)),
        ((5, 12, 30), (8, 8, 8), 0.0, 4, ("flips", "rot90")),  # z shorter than the patch
        ((16, 16, 16), (16, 16, 16), 0.25, 2, ("rot90",)),
    ],
)
def test_equivariant_model_equals_the_whole_volume(shape, patch, overlap, batch, tta):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=shape).astype(np.float32)
    model = _pointwise()
    window = Window(patch=patch, overlap=overlap, batch_size=batch, tta=tta)
    calls = []
    out = sliding_window(volume, model, 3, window, progress=lambda d, t: calls.append((d, t)))
    with torch.no_grad():
        whole = model(torch.from_numpy(volume)[None, None])[0].numpy()
    assert out.shape == (3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)
    assert calls[-1] == (count_windows(shape, window),) * 2


def test_identity_model_reproduces_the_volume():
    volume = np.random.default_rng(2).normal(size=(13, 29, 22)).astype(np.float32)
    out = sliding_window(volume, lambda x: x, 1, Window(patch=(8, 8, 8), overlap=0.3))
    np.testing.assert_allclose(out[0], volume, rtol=1e-6, atol=1e-6)


def test_windows_cover_every_voxel_and_end_flush():
    assert window_starts(10, 16, 0.25) == [0]
    assert window_starts(32, 16, 0.25) == [0, 12, 16]
    assert window_starts(32, 16, 0.0) == [0, 16]
    for length in range(8, 60):
        starts = window_starts(length, 8, 0.25)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 8] = True
        assert covered.all() and starts[-1] == length - 8


def test_blend_is_the_gaussian_weighted_mean_of_the_windows():
    """A model whose output is constant per window (its input's mean): every voxel is the
    importance-weighted mean of the windows covering it, computed here window by window."""
    volume = np.random.default_rng(3).normal(size=(14, 20, 18)).astype(np.float32)
    patch = (8, 8, 8)

    def window_mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).clone()

    window = Window(patch=patch, overlap=0.5, batch_size=5)
    out = sliding_window(volume, window_mean, 1, window)[0]
    weight = importance_map(patch)
    assert weight.max() == 1.0 and weight.min() > 0 and weight[0, 0, 0] < 0.05
    num = np.zeros(volume.shape)
    den = np.zeros(volume.shape)
    for z in window_starts(14, 8, 0.5):
        for y in window_starts(20, 8, 0.5):
            for x in window_starts(18, 8, 0.5):
                box = np.s_[z : z + 8, y : y + 8, x : x + 8]
                num[box] += weight * volume[box].mean()
                den[box] += weight
    np.testing.assert_allclose(out, num / den, rtol=1e-5, atol=1e-6)
    flat = sliding_window(
        volume, window_mean, 1, Window(patch=patch, overlap=0.5, blend="constant")
    )
    assert not np.allclose(flat[0], out, atol=1e-3)  # the blend matters


def test_tta_transforms_invert_and_windows_are_checked():
    x = torch.randn(2, 1, 8, 8, 8)
    transforms = tta_transforms(("flips", "rot90"))
    assert len(transforms) == 7
    for forward, inverse in transforms:
        assert torch.equal(inverse(forward(x)), x)
    assert (
        len(
            {
                forward(x).sum(dim=(0, 1)).flatten()[:9].numpy().tobytes()
                for forward, _ in transforms
            }
        )
        == 7
    )
    with pytest.raises(BadOption, match=r"tta=\('mirror',\): unknown \['mirror'\]"):
        Window(patch=(8, 8, 8), tta=("mirror",))
    with pytest.raises(BadInput, match="expected \\(B, 2"):
        sliding_window(np.zeros((8, 8, 8), np.float32), lambda x: x, 2, Window(patch=(8, 8, 8)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda_stays_close_to_float32():
    volume = np.random.default_rng(4).normal(size=(20, 40, 36)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    )
    model = model.cuda().eval()
    window = Window(patch=(16, 16, 16), tta=("flips", "rot90"))
    plain = sliding_window(volume, model, 2, window, device="cuda")
    fast = sliding_window(volume, model, 2, window, device="cuda", amp=torch.bfloat16)
    np.testing.assert_allclose(fast, plain, atol=0.05)
