"""The counter-based noise: Gaussian, keyed by (seed, voxel), the same in numba and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from streamvol.augment import AugmentParams, apply_cpu, normal_field, normal_field_torch
from streamvol.augment._kernels.noise import GOLDEN32, LOWBIAS, MASK32, NOISE_TABLE, noise_key


def _lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * LOWBIAS[0]) & MASK32
    x ^= x >> 15
    x = (x * LOWBIAS[1]) & MASK32
    return x ^ (x >> 16)


def _reference(seed: int, n: int) -> np.ndarray:
    """The documented construction in plain Python integers."""
    key = noise_key(seed)
    k0, k1 = key & MASK32, key >> 32
    words = [_lowbias32(_lowbias32(((i * GOLDEN32) & MASK32) ^ k0) ^ k1) for i in range(n)]
    return NOISE_TABLE[np.array(words) >> 16]


def test_field_is_standard_normal():
    f = normal_field(12345, (64, 64, 64)).ravel().astype(np.float64)
    assert abs(f.mean()) < 5 / np.sqrt(f.size)
    assert abs(f.std() - 1.0) < 0.005
    assert abs(stats.kurtosis(f)) < 0.05
    assert stats.kstest(f, "norm").pvalue > 1e-3
    assert abs((np.abs(f) > 3.0).mean() / (2 * stats.norm.sf(3.0)) - 1) < 0.15
    assert np.abs(f).max() > 3.7


def test_table_is_the_unit_variance_normal_quantiles():
    t = NOISE_TABLE.astype(np.float64)
    assert t.size == 2**16 and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t, -t[::-1], atol=1e-6)  # symmetric: mean 0
    assert abs(np.mean(t * t) - 1.0) < 1e-6
    q = stats.norm.ppf((np.arange(t.size) + 0.5) / t.size)
    np.testing.assert_allclose(t, q / q.std(), rtol=1e-6, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**64 - 1))
def test_numba_field_is_the_documented_construction(seed):
    np.testing.assert_array_equal(normal_field(seed, (300,)), _reference(seed, 300))


def test_neighbouring_voxels_and_seeds_are_uncorrelated():
    f = normal_field(7, (32, 32, 32))
    g = normal_field(8, (32, 32, 32))
    for a, b in [(f[:, :, 1:], f[:, :, :-1]), (f[1:], f[:-1]), (f, g)]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02


def test_value_depends_on_seed_and_index_only():
    big = normal_field(99, (4, 8, 16))
    again = normal_field(99, (4 * 8 * 16,))
    np.testing.assert_array_equal(big.ravel(), again)
    assert not np.array_equal(big, normal_field(100, (4, 8, 16)))


def test_torch_reproduces_the_numba_field_bit_for_bit():
    seeds = [0, 1, 2**31, 2**63 + 5, 2**64 - 1]
    as_int64 = torch.from_numpy(np.array(seeds, dtype=np.uint64).view(np.int64))
    got = normal_field_torch(as_int64, (16, 16, 16))
    assert got.dtype == torch.float32
    for i, seed in enumerate(seeds):
        np.testing.assert_array_equal(got[i].numpy(), normal_field(seed, (16, 16, 16)))


def test_torch_off_cuda_takes_the_torch_ops_and_the_fused_kernel_needs_cuda():
    from streamvol.augment._noise import _LEVEL_CODE, noise_path

    assert noise_path("cpu") == "eager"
    seeds = torch.tensor([3, -7])
    np.testing.assert_array_equal(
        normal_field_torch(seeds, (5, 6, 7), fused=False).numpy(),
        normal_field_torch(seeds, (5, 6, 7)).numpy(),
    )
    if not torch.cuda.is_available():
        with pytest.raises(AssertionError, match="CUDA"):
            normal_field_torch(seeds, (5, 6, 7), fused=True)
    # the kernel's constants are the construction's
    for constant in (GOLDEN32, *LOWBIAS):
        assert f"{constant:#x}u" in _LEVEL_CODE


@pytest.mark.gpu
def test_fused_cuda_kernel_reproduces_the_numba_field_bit_for_bit():
    from streamvol.augment._noise import noise_path

    seeds = [0, 1, 2**31, 2**32 + 3, 2**63 + 5, 2**64 - 1]
    as_int64 = torch.from_numpy(np.array(seeds, dtype=np.uint64).view(np.int64)).cuda()
    shape = (33, 40, 41)  # not a multiple of any vector width
    fused = normal_field_torch(as_int64, shape, fused=True)
    eager = normal_field_torch(as_int64, shape, fused=False)
    assert fused.is_cuda and torch.equal(fused, eager)
    for i, seed in enumerate(seeds):
        np.testing.assert_array_equal(fused[i].cpu().numpy(), normal_field(seed, shape))
    normal_field_torch(as_int64, shape)  # the default path on CUDA: fused, unless it fell back
    assert noise_path("cuda") == "fused"


def test_key():
    assert noise_key(0) != noise_key(1) and 0 <= noise_key(2**64 - 1) < 2**64


@pytest.mark.parametrize("shape", [(24, 24, 24), (13, 7, 11)])
def test_noise_in_apply_cpu_has_its_std_and_ignores_thread_count(shape):
    params = AugmentParams.from_matrix(np.eye(4), shape, shape, noise_std=0.3, noise_seed=42)
    zero = {"image": np.zeros(shape, np.float32)}
    one = apply_cpu(zero, params, threads=1)["image"]
    two = apply_cpu(zero, params, threads=2)["image"]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one[0], 0.3 * normal_field(42, shape), rtol=1e-6, atol=1e-7)
    assert abs(one.std() - 0.3) < 0.03 and abs(one.mean()) < 0.03
