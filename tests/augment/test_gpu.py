"""The GPU backend (on a CPU torch device here, on CUDA under the ``gpu`` marker) agrees with the
CPU backend, and its geometry is kornia's."""

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
from streamvol.augment._gpu import _coordinates, _grid, _may_leave, grid_theta
from streamvol.errors import ShapeMismatch

from .conftest import block, rng_for, stored_for


def _near_ties(params: BatchParams, i: int, tol: float = 1e-4) -> np.ndarray:
    """Output voxels whose stored coordinate is within ``tol`` of a rounding tie (x.5)."""
    coords = _coordinates(params.to("cpu"), torch.float64)
    near = np.zeros(params.out_shape, bool)
    for c in coords:
        frac = c[i].numpy() % 1.0
        near |= np.abs(frac - 0.5) < tol
    return near


def _agree(spec: Augment, dtype: type, device: str) -> None:
    """Six samples with every drawn step, through both backends: images within 1e-4 (normalised
    units), masks equal except at ties, points equal."""
    out = (12, 12, 12)
    stored = stored_for(spec, 12)
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
        params.append(spec.sample(rng_for(i, 2, 5), stored, out))
    batch = {
        "image": torch.from_numpy(np.stack(images))[:, None],
        "mask": torch.from_numpy(np.stack(masks)).long(),
        "points": torch.from_numpy(np.stack([pts] * 6)),
        "points_count": torch.full((6,), 30),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    bp = stack_params(params)
    gpu = {k: v.cpu() for k, v in apply_gpu(batch, bp, offset=80.0, scale=0.02).items()}
    for i, (sample, p) in enumerate(zip(samples, params, strict=True)):
        cpu = apply_cpu(sample, p, offset=80.0, scale=0.02)
        assert np.abs(gpu["image"][i].numpy() - cpu["image"]).max() < 1e-4
        differ = gpu["mask"][i].numpy() != cpu["mask"]
        assert not (differ & ~_near_ties(bp, i)).any()
        n = int(gpu["points_count"][i])
        np.testing.assert_array_equal(gpu["points"][i, :n].numpy(), cpu["points"])
        assert (gpu["points"][i, n:] == 0).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_cpu_and_gpu_backends_agree(dtype, everything):
    _agree(everything, dtype, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_cpu_backend_and_gpu_backend_on_cuda_agree(dtype, everything):
    _agree(everything, dtype, "cuda")


@pytest.mark.gpu
def test_cuda_agreement_survives_tf32_matmuls_and_convolutions(everything):
    """A trainer that allows TF32 matrix products (and cuDNN's TF32 convolutions, on by default)
    must not change the augmentation: grids, elastic fields and blurs never round through it."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        _agree(everything, np.float32, "cuda")
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_grid_is_kornias_warp_affine3d():
    """The backend's geometry equals kornia's ``warp_affine3d`` fed the inverse matrices in
    (x, y, z) order (which it inverts back, in float32)."""
    from kornia.geometry.transform import warp_affine3d

    spec = Augment(rotate=Augment.preset("default").rotate, scale=Augment.preset("default").scale)
    stored = stored_for(spec, 10)
    vol = block(stored, np.float32) / 199.0
    params = [spec.sample(rng_for(s), stored, (10, 10, 10)) for s in range(3)]
    images = torch.from_numpy(np.stack([vol] * 3))[:, None]
    ours = apply_gpu({"image": images}, params)["image"]
    swap = np.eye(4)[[2, 1, 0, 3]]
    m = np.stack([(swap @ p.inverse @ swap)[:3] for p in params])
    theirs = warp_affine3d(
        images, torch.from_numpy(m).float(), (10, 10, 10), flags="bilinear", align_corners=True
    )
    assert (ours - theirs).abs().max() < 1e-5


def test_grid_holds_every_output_voxels_stored_coordinates(everything):
    """kornia's normalised matrices, and the grid made from them, send each output voxel where
    the float64 matrix (plus the elastic field) does, to float32 precision."""
    stored = stored_for(everything, 9)
    params = stack_params([everything.sample(rng_for(s), stored, (9, 8, 7)) for s in range(8)])
    assert params.elastic is not None  # p 0.5 over 8 draws: some samples carry a field
    want = torch.stack(_coordinates(params, torch.float64), dim=-1)  # (B, d, h, w, 3) zyx
    top = torch.tensor(stored, dtype=torch.float64) - 1
    grid = _grid(params).double().flip(-1)  # zyx
    assert ((grid + 1) / 2 * top - want).abs().max() < 1e-4
    theta = grid_theta(params)
    assert theta.dtype == torch.float64 and theta.shape == (8, 3, 4)


def test_only_samples_that_may_leave_the_block_are_flagged(everything):
    """With the margin the spec asks for, no sample reads outside the block (the exact test is
    skipped); a shift past the margin is flagged."""
    stored = stored_for(everything, 10)
    inside = stack_params([everything.sample(rng_for(s), stored, (10,) * 3) for s in range(16)])
    assert not _may_leave(inside).any()
    m = np.eye(4)
    m[1, 3] = stored[1] - 10 + 0.25  # y reads past the block's end by a quarter voxel
    edge = AugmentParams.from_matrix(m, stored, (10,) * 3)
    flush = AugmentParams.centre(stored, (10,) * 3)
    assert _may_leave(stack_params([flush, edge])).tolist() == [False, True]


def test_points_by_kornia_equal_the_numpy_route_bit_for_bit():
    """kornia's ``transform_points`` divides by ``w + 1e-8``; with w set so that the divisor is
    exactly 1, float32 points equal the CPU's elementwise float64 route."""
    from streamvol.augment._points import _affine, _kornia_affine

    rng = np.random.default_rng(0)
    spec = Augment.preset("default")
    params = [spec.sample(rng_for(s), (112,) * 3, (64,) * 3) for s in range(8)]
    inverse = np.stack([p.inverse for p in params])
    pts = rng.uniform(-10, 122, (8, 5000, 3))
    ours = torch.stack(_kornia_affine(torch.from_numpy(pts), torch.from_numpy(inverse)), -1)
    numpy = np.stack(_affine(pts, inverse), -1)
    assert np.abs(ours.numpy() - numpy).max() < 1e-11
    np.testing.assert_array_equal(ours.numpy().astype(np.float32), numpy.astype(np.float32))


def test_a_batch_without_points_keeps_none(everything):
    stored = stored_for(everything, 8)
    params = [everything.sample(rng_for(s), stored, (8, 8, 8)) for s in range(2)]
    batch = {
        "image": torch.rand(2, 1, *stored),
        "points": torch.zeros(2, 0, 4),
        "points_count": torch.zeros(2, dtype=torch.int64),
    }
    out = apply_gpu(batch, params)
    assert out["points"].shape == (2, 0, 4) and out["points_count"].tolist() == [0, 0]


def test_reading_outside_the_block_gives_zero_on_both_backends():
    vol = block((10, 10, 10), np.float32)
    m = np.eye(4)
    m[:3, 3] = (2.25, -1.75, 0.4)  # z past the end, y before the start; no rounding ties
    p = AugmentParams.from_matrix(m, vol.shape, (8, 8, 8))
    mask = (vol > 99).astype(np.uint8)
    cpu = apply_cpu({"image": vol, "mask": mask}, p)
    gpu = apply_gpu(
        {"image": torch.from_numpy(vol)[None, None], "mask": torch.from_numpy(mask)[None].long()},
        [p],
    )
    np.testing.assert_allclose(gpu["image"][0].numpy(), cpu["image"], atol=1e-4)
    np.testing.assert_array_equal(gpu["mask"][0].numpy(), cpu["mask"])
    assert (cpu["image"][0, :, :2] == 0).all() and (cpu["image"][0, -1] == 0).all()
    assert (cpu["image"][0, :-1, 2:] != 0).all()


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
    # float32 grid: coordinates good to ~1e-6 of a voxel, neighbours up to 400 apart
    np.testing.assert_allclose(out["image"][0, 0].numpy(), want, atol=2e-4)
    np.testing.assert_allclose(out["image"][1, 0].numpy(), want - 20.0, atol=2e-4)


def test_gpu_shape_errors():
    params = [AugmentParams.centre((10, 10, 10), (6, 6, 6))]
    with pytest.raises(ShapeMismatch, match="stored block"):
        apply_gpu({"image": torch.zeros(1, 1, 8, 10, 10)}, params)
    with pytest.raises(ValueError, match="1 parameter sets"):
        apply_gpu({"image": torch.zeros(2, 1, 10, 10, 10)}, params)
