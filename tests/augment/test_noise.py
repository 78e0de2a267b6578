"""The counter-based noise: Gaussian, keyed by (seed, voxel), the same in numba and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from streamvol.augment import AugmentParams, apply_cpu, normal_field, normal_field_torch
from streamvol.augment._noise import KI, WI, noise_key


def test_field_is_standard_normal():
    f = normal_field(12345, (64, 64, 64)).ravel()
    assert abs(f.mean()) < 5 / np.sqrt(f.size)
    assert abs(f.std() - 1.0) < 0.005
    assert abs(stats.kurtosis(f)) < 0.05
    assert stats.kstest(f, "norm").pvalue > 1e-3
    # tails: the ziggurat's slow paths (wedges and the tail beyond 3.65) are exercised
    assert abs((np.abs(f) > 3.0).mean() / (2 * stats.norm.sf(3.0)) - 1) < 0.15
    assert np.abs(f).max() > 3.7


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
    seeds = [0, 1, 2**63 + 5, 2**64 - 1]
    as_int64 = torch.from_numpy(np.array(seeds, dtype=np.uint64).view(np.int64))
    got = normal_field_torch(as_int64, (16, 16, 16)).numpy()
    for i, seed in enumerate(seeds):
        np.testing.assert_array_equal(got[i], normal_field(seed, (16, 16, 16)))


def test_tables_and_key():
    assert KI[1] == 0 and KI[0] > 0 and (WI > 0).all()
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
