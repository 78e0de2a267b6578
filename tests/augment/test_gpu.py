"""The GPU backend (on a CPU torch device here) agrees with the CPU backend and with kornia."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from streamvol.augment import (
    Augment,
    AugmentParams,
    BatchParams,
    apply_cpu,
    apply_gpu,
    stack_params,
)
from streamvol.augment._gpu import _coordinates
from streamvol.errors import ShapeMismatch

from .conftest import block, rng_for, stored_for


def _near_ties(params: BatchParams, i: int, tol: float = 1e-4) -> np.ndarray:
    """Output voxels whose stored coordinate is within ``tol`` of a rounding tie (x.5)."""
    coords = _coordinates(params, torch.float64)
    near = np.zeros(params.out_shape, bool)
    for c in coords:
        frac = c[i].numpy() % 1.0
        near |= np.abs(frac - 0.5) < tol
    return near


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_cpu_and_gpu_backends_agree(dtype, everything):
    out = (12, 12, 12)
    stored = stored_for(everything, 12)
    rng = np.random.default_rng(1)
    images, masks, samples, params = [], [], [], []
    pts = np.concatenate(
        [rng.uniform(0, np.array(stored) - 1, (30, 3)), rng.integers(0, 4, (30, 1))], 1
    ).astype(np.float32)
    for i in range(6):
        vol = block(stored, dtype, seed=i)
        mask = (vol.astype(np.float32) // 40).astype(np.uint8)
        images.append(vol)
        masks.append(mask)
        samples.append({"image": vol, "mask": mask, "points": pts})
        params.append(everything.sample(rng_for(i, 2, 5), stored, out))
    batch = {
        "image": torch.from_numpy(np.stack(images))[:, None],
        "mask": torch.from_numpy(np.stack(masks)).long(),
        "points": torch.from_numpy(np.stack([pts] * 6)),
        "points_count": torch.full((6,), 30),
    }
    bp = stack_params(params)
    gpu = apply_gpu(batch, bp, offset=80.0, scale=0.02)
    for i, (sample, p) in enumerate(zip(samples, params, strict=True)):
        cpu = apply_cpu(sample, p, offset=80.0, scale=0.02)
        assert np.abs(gpu["image"][i].numpy() - cpu["image"]).max() < 1e-4
        differ = gpu["mask"][i].numpy() != cpu["mask"]
        assert not (differ & ~_near_ties(bp, i)).any()
        n = int(gpu["points_count"][i])
        np.testing.assert_array_equal(gpu["points"][i, :n].numpy(), cpu["points"])
        assert (gpu["points"][i, n:] == 0).all()


def test_grid_sample_route_equals_kornia_warp_affine3d():
    kornia = pytest.importorskip("kornia")
    spec = Augment(rotate=Augment.preset("default").rotate, scale=Augment.preset("default").scale)
    stored = stored_for(spec, 10)
    vol = block(stored, np.float32) / 199.0
    params = [spec.sample(rng_for(s), stored, (10, 10, 10)) for s in range(3)]
    ours = apply_gpu({"image": torch.from_numpy(np.stack([vol] * 3))[:, None]}, params)["image"]
    # kornia wants source -> destination in (x, y, z) order: permute and invert ours
    perm = np.eye(4)[[2, 1, 0, 3]]
    m = np.stack([(perm @ np.linalg.inv(p.matrix) @ perm)[:3] for p in params])
    theirs = kornia.geometry.transform.warp_affine3d(
        torch.from_numpy(np.stack([vol] * 3))[:, None],
        torch.from_numpy(m).float(),
        (10, 10, 10),
        flags="bilinear",
        align_corners=True,
    )
    assert (ours - theirs).abs().max() < 1e-3


def test_batch_params_travel_through_default_collate_and_back(everything):
    params = [everything.sample(rng_for(s), (20, 20, 20), (8, 8, 8)) for s in range(4)]
    stacked = stack_params(params)
    collated = BatchParams.from_collated(default_collate([p.to_dict() for p in params]))
    for name in ("matrix", "inverse", "gamma", "contrast", "brightness", "noise_std", "noise_seed"):
        assert torch.equal(getattr(stacked, name), getattr(collated, name))
    assert collated.out_shape == (8, 8, 8) and len(collated) == 4
    back = stacked.to("cpu").unstack()
    for a, b in zip(params, back, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        assert (a.noise_seed, a.gamma, a.blur_sigma) == (b.noise_seed, b.gamma, b.blur_sigma)


def test_accepts_params_lists_dhw_images_and_per_sample_normalisation():
    vol = block((10, 10, 10), np.float32)
    params = [AugmentParams.centre((10, 10, 10), (6, 6, 6))] * 2
    images = torch.from_numpy(np.stack([vol, vol]))
    out = apply_gpu({"image": images}, params, offset=torch.tensor([0.0, 10.0]), scale=2.0)
    want = vol[2:8, 2:8, 2:8] * 2.0
    np.testing.assert_allclose(out["image"][0, 0].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(out["image"][1, 0].numpy(), want - 20.0, rtol=1e-6)


def test_gpu_shape_errors():
    params = [AugmentParams.centre((10, 10, 10), (6, 6, 6))]
    with pytest.raises(ShapeMismatch, match="stored block"):
        apply_gpu({"image": torch.zeros(1, 1, 8, 10, 10)}, params)
    with pytest.raises(ValueError, match="1 parameter sets"):
        apply_gpu({"image": torch.zeros(2, 1, 10, 10, 10)}, params)
