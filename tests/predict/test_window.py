"""Sliding windows: a translation-equivariant model gives exactly what it gives on the whole
volume (edges included), the blend is the Gaussian-weighted mean of the windows (checked against
a loop written out here), TTA maps each prediction back, and the volume is read and finished in
z order, holding a bounded depth of planes however deep it is."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.errors import BadInput, BadOption
from streamvol.predict import (
    Window,
    count_windows,
    importance_map,
    sliding_window,
    sliding_window_slabs,
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


def _window_mean(x: torch.Tensor) -> torch.Tensor:
    """Constant per window (its input's mean): what a voxel gets depends on every window."""
    return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).clone()


def _blended_window_means(volume: np.ndarray, window: Window) -> np.ndarray:
    """``_window_mean`` blended, written out window by window (``volume`` at least a patch)."""
    weight = importance_map(window.patch, window.blend)
    num = np.zeros(volume.shape)
    den = np.zeros(volume.shape)
    starts = [
        window_starts(n, p, window.overlap) for n, p in zip(volume.shape, window.patch, strict=True)
    ]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                box = tuple(slice(a, a + p) for a, p in zip((z, y, x), window.patch, strict=True))
                num[box] += weight * volume[box].mean()
                den[box] += weight
    return num / den


def test_blend_is_the_gaussian_weighted_mean_of_the_windows():
    """Every voxel is the importance-weighted mean of the windows covering it."""
    volume = np.random.default_rng(3).normal(size=(14, 20, 18)).astype(np.float32)
    patch = (8, 8, 8)
    window = Window(patch=patch, overlap=0.5, batch_size=5)
    out = sliding_window(volume, _window_mean, 1, window)[0]
    weight = importance_map(patch)
    assert weight.max() == 1.0 and weight.min() > 0 and weight[0, 0, 0] < 0.05
    np.testing.assert_allclose(out, _blended_window_means(volume, window), rtol=1e-5, atol=1e-6)
    flat = sliding_window(
        volume, _window_mean, 1, Window(patch=patch, overlap=0.5, blend="constant")
    )
    assert not np.allclose(flat[0], out, atol=1e-3)  # the blend matters


class _Planes:
    """A volume that records which planes are read, and when, against what was yielded."""

    def __init__(self, volume: np.ndarray):
        self.volume, self.shape = volume, volume.shape
        self.reads: list[tuple[int, int]] = []
        self.yielded = 0  # planes the consumer has received
        self.held: list[int] = []  # planes read but not yet yielded, at each read

    def __getitem__(self, planes: slice) -> np.ndarray:
        start, stop, _ = planes.indices(self.shape[0])
        self.reads.append((start, stop))
        self.held.append(stop - self.yielded)
        return self.volume[planes]


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(8, 40),
    side=st.integers(8, 20),
    patch=st.sampled_from([(8, 8, 8), (4, 8, 8), (8, 4, 8)]),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    batch=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_slabs_are_the_blend_read_and_finished_in_z_order(depth, side, patch, overlap, batch, seed):
    """Slabs come in z order, each plane once, and join into the blend written out window by
    window; every plane is read once, in order; and what is held between reading a plane and
    yielding it is at most the planes one batch of windows spans, not the volume."""
    volume = np.random.default_rng(seed).normal(size=(depth, side, side + 3)).astype(np.float32)
    window = Window(patch=patch, overlap=overlap, batch_size=batch)
    source = _Planes(volume)
    slabs = []
    for z0, slab in sliding_window_slabs(source, _window_mean, 1, window):
        assert z0 == source.yielded and slab.shape[0] == 1 and slab.shape[2:] == volume.shape[1:]
        slabs.append((z0, slab))
        source.yielded = z0 + slab.shape[1]
    joined = np.concatenate([s for _, s in slabs], axis=1)[0]
    np.testing.assert_allclose(joined, _blended_window_means(volume, window), rtol=1e-5, atol=1e-6)
    assert source.reads[0][0] == 0 and source.reads[-1][1] == depth
    assert all(a[1] == b[0] for a, b in itertools.pairwise(source.reads))  # once, in order
    per_row = len(window_starts(side, patch[1], overlap)) * len(
        window_starts(side + 3, patch[2], overlap)
    )
    starts = window_starts(depth, patch[0], overlap)
    steps = -(-(batch - 1) // per_row)  # z steps between a batch's first and last window
    gaps = [b - a for a, b in itertools.pairwise(starts)] or [0]
    assert max(source.held) <= patch[0] + steps * max(gaps)


def test_a_deep_volume_is_yielded_before_it_is_read_whole():
    volume = np.zeros((64, 16, 16), np.float32)
    source = _Planes(volume)
    slabs = sliding_window_slabs(source, _window_mean, 1, Window(patch=(8, 8, 8)))
    z0, first = next(slabs)
    assert z0 == 0 and first.shape[1] == 6  # planes 0-5: the second window starts at 6
    assert source.reads == [(0, 8), (8, 14)]  # windows at z 0 and 6 so far, not 64 planes
    assert sum(s.shape[1] for _, s in slabs) + 6 == 64


def test_the_whole_volume_sums_into_its_output():
    """``sliding_window`` holds its output and a batch's depth of input planes, not a second
    buffer of sums beside the output (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    volume = np.random.default_rng(5).normal(size=(64, 64, 64)).astype(np.float32)
    window = Window(patch=(16, 16, 16), batch_size=4)
    tracemalloc.start()
    out = sliding_window(volume, lambda x: x.expand(-1, 4, -1, -1, -1), 4, window)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(out, np.broadcast_to(volume, out.shape), rtol=1e-5, atol=1e-5)
    assert peak < out.nbytes + volume.nbytes, (peak, out.nbytes)


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
