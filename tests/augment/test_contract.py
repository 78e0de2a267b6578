"""One contract, two backends: every test here runs on the CPU (numba) and the GPU backend (kornia
and torch, on a CPU device in CI, and on CUDA where there is one: the ``gpu`` marker), through
the same small adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvol.augment import (
    Augment,
    AugmentParams,
    apply_cpu,
    apply_gpu,
    normal_field,
    stack_params,
)

from .conftest import block, rng_for, stored_for


def _cpu(samples, params, offset, scale):
    return [
        apply_cpu(s, p, offset=offset, scale=scale) for s, p in zip(samples, params, strict=True)
    ]


def _gpu(samples, params, offset, scale, device="cpu"):
    batch = {"image": torch.from_numpy(np.stack([s["image"] for s in samples]))}
    if "mask" in samples[0]:
        batch["mask"] = torch.from_numpy(np.stack([s["mask"] for s in samples]).astype(np.int64))
    if "points" in samples[0]:
        counts = [len(s["points"]) for s in samples]
        padded = np.zeros((len(samples), max(counts), 4), np.float32)
        for i, s in enumerate(samples):
            padded[i, : counts[i]] = s["points"]
        batch["points"] = torch.from_numpy(padded)
        batch["points_count"] = torch.tensor(counts)
    batch = {k: v.to(device) for k, v in batch.items()}
    done = apply_gpu(batch, stack_params(params), offset=offset, scale=scale)
    done = {k: v.cpu() for k, v in done.items()}
    out = []
    for i in range(len(samples)):
        one = {"image": done["image"][i].numpy()}
        if "mask" in done:
            one["mask"] = done["mask"][i].numpy()
        if "points" in done:
            one["points"] = done["points"][i, : int(done["points_count"][i])].numpy()
        out.append(one)
    return out


def _cuda(samples, params, offset, scale):
    return _gpu(samples, params, offset, scale, device="cuda")


@pytest.fixture(params=["cpu", "gpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(request):
    return {"cpu": _cpu, "gpu": _gpu, "cuda": _cuda}[request.param]


class TestBackendContract:
    """What apply_cpu and apply_gpu both promise for the same parameters."""

    def test_shapes_and_dtypes(self, backend, everything):
        stored = stored_for(everything, 10)
        vol = block(stored, np.uint8)
        samples = [
            {
                "image": vol,
                "mask": (vol > 99).astype(np.uint8),
                "points": np.array([[*(np.array(stored) / 2), 1]], np.float32),
            }
        ] * 2
        params = [everything.sample(rng_for(s), stored, (10, 10, 10)) for s in range(2)]
        for out in backend(samples, params, 0.0, 1.0):
            assert out["image"].shape == (1, 10, 10, 10) and out["image"].dtype == np.float32
            assert out["mask"].shape == (10, 10, 10) and out["mask"].dtype == np.int64
            assert out["points"].dtype == np.float32 and out["points"].shape[1] == 4

    def test_centre_params_give_the_normalised_centre_crop(self, backend):
        vol = block((14, 16, 18), np.uint16)
        p = AugmentParams.centre(vol.shape, (8, 8, 8))
        (out,) = backend([{"image": vol}], [p], 20.0, 0.5)
        want = (vol[3:11, 4:12, 5:13].astype(np.float32) - 20.0) * 0.5
        # the GPU grid is float32: a coordinate is good to ~1e-6 of a voxel, and neighbours here
        # differ by up to 100, so 1e-4 (the CPU reads whole voxels: exact)
        np.testing.assert_allclose(out["image"][0], want, atol=1e-4)

    def test_flips_and_turns_are_exact_permutations(self, backend):
        vol = block((9, 9, 9), np.float32)
        spec = Augment.preset("flips")
        params = [spec.sample(rng_for(s), vol.shape, vol.shape) for s in range(6)]
        for out, p in zip(backend([{"image": vol}] * 6, params, 0.0, 1.0), params, strict=True):
            index = np.indices(vol.shape).reshape(3, -1)
            source = (p.matrix[:3, :3] @ index + p.matrix[:3, 3:]).round().astype(int)
            want = vol[tuple(source)].reshape(vol.shape)
            np.testing.assert_allclose(out["image"][0], want, atol=1e-5)

    def test_noise_is_the_keyed_field(self, backend):
        shape = (12, 12, 12)
        p = AugmentParams.from_matrix(np.eye(4), shape, shape, noise_std=0.5, noise_seed=77)
        (out,) = backend([{"image": np.zeros(shape, np.float32)}], [p], 0.0, 1.0)
        np.testing.assert_allclose(out["image"][0], 0.5 * normal_field(77, shape), atol=1e-6)
        assert abs(out["image"].std() - 0.5) < 0.05

    def test_outside_the_block_reads_raw_zero(self, backend):
        vol = np.full((8, 8, 8), 50, np.uint8)
        m = np.eye(4)
        m[2, 3] = 4.0  # x reads 4..11: the last 4 columns fall outside
        p = AugmentParams.from_matrix(m, vol.shape, vol.shape)
        (out,) = backend([{"image": vol, "mask": np.ones_like(vol)}], [p], 10.0, 0.1)
        np.testing.assert_allclose(out["image"][0, :, :, :4], 4.0, atol=1e-6)
        np.testing.assert_allclose(out["image"][0, :, :, 4:], -1.0, atol=1e-6)
        assert (out["mask"][:, :, :4] == 1).all() and (out["mask"][:, :, 4:] == 0).all()

    def test_points_stay_inside_and_keep_their_class(self, backend, everything):
        stored = stored_for(everything, 10)
        rng = np.random.default_rng(3)
        centre = (np.array(stored) - 1) / 2
        pts = np.concatenate(
            [rng.uniform(centre - 8, centre + 8, (200, 3)), rng.integers(0, 5, (200, 1))], 1
        ).astype(np.float32)
        samples = [{"image": block(stored, np.float32), "points": pts}] * 3
        params = [everything.sample(rng_for(s), stored, (10, 10, 10)) for s in range(3)]
        for out in backend(samples, params, 0.0, 1.0):
            kept = out["points"]
            assert 0 < len(kept) < 200
            assert (kept[:, :3] >= -0.5).all() and (kept[:, :3] < 9.5).all()
            assert set(kept[:, 3]) <= set(pts[:, 3])

    def test_masks_only_carry_input_labels(self, backend, everything):
        stored = stored_for(everything, 10)
        labels = (block(stored, np.float32) // 50).astype(np.uint8) * 3
        params = [everything.sample(rng_for(s), stored, (10, 10, 10)) for s in range(2)]
        outs = backend([{"image": labels, "mask": labels}] * 2, params, 0.0, 1.0)
        for out in outs:
            assert set(np.unique(out["mask"])) <= set(np.unique(labels))

    def test_same_params_same_output(self, backend, everything):
        stored = stored_for(everything, 10)
        vol = block(stored, np.float16)
        params = [everything.sample(rng_for(s), stored, (10, 10, 10)) for s in range(3)]
        a = backend([{"image": vol}] * 3, params, 0.0, 0.01)
        b = backend([{"image": vol}] * 3, params, 0.0, 0.01)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["image"], y["image"])
