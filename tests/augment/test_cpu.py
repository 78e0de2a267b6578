"""The CPU backend against references: scipy's affine_transform and gaussian_filter, numpy's
flips and turns, and the documented intensity chain written out in numpy."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.augment import (
    Augment,
    AugmentParams,
    Rotate,
    Shift,
    affine_transform,
    apply_cpu,
    block_stats,
    normal_field,
)
from streamvol.augment._cpu import blur_weights, exact_view
from streamvol.errors import ShapeMismatch

from .conftest import block, rng_for, stored_for

DTYPES = [np.uint8, np.uint16, np.float16, np.float32]


def _random_matrix(rng: np.random.Generator, shape) -> np.ndarray:
    """A random rotation-ish affine around the centre, some points falling outside."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    linear = q * rng.uniform(0.7, 1.3, 3)
    c = (np.array(shape) - 1) / 2
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = c + rng.uniform(-2, 2, 3) - linear @ c
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", [0, 1])
def test_affine_transform_matches_scipy(dtype, order):
    rng = np.random.default_rng(order * 10 + DTYPES.index(dtype))
    vol = block((14, 15, 16), dtype, seed=1)
    for trial in range(4):
        m = _random_matrix(rng, vol.shape)
        matrix = m if trial % 2 else m[:3]  # 4x4 and 3x4 both accepted
        got = affine_transform(vol, matrix, (12, 13, 14), order=order)
        ref = ndi.affine_transform(
            vol.astype(np.float64), m, output_shape=(12, 13, 14), order=order, mode="constant"
        )
        assert got.dtype == np.float32 and got.shape == (12, 13, 14)
        # everywhere, boundary included (constant mode: outside [0, n - 1] reads cval)
        err = np.abs(got - ref)
        if order == 0:  # nearest can differ where scipy's and our coordinate round differently
            assert (err > 1e-4).mean() < 1e-3
        else:
            assert err.max() < 1e-4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES))
def test_augment_resamples_masks_as_scipy_nearest_and_images_in_float32(seed, dtype):
    """The augment path interpolates in float32 but places voxels in float64: masks equal
    scipy's order 0 wherever no coordinate sits within 1e-9 of a tie or of the block's edge."""
    rng = np.random.default_rng(seed)
    vol = block((20, 21, 22), dtype, seed=seed % 1000)
    labels = rng.integers(0, 7, vol.shape).astype(np.uint8)
    m = _random_matrix(rng, vol.shape)
    shape = (12, 13, 14)
    got = apply_cpu({"image": vol, "mask": labels}, AugmentParams.from_matrix(m, vol.shape, shape))
    coords = m[:3, :3] @ np.indices(shape).reshape(3, -1) + m[:3, 3:]
    frac = coords - np.floor(coords)
    edge = np.array(vol.shape)[:, None] - 1.0
    near = (np.abs(frac - 0.5) < 1e-9) | (np.abs(coords) < 1e-9) | (np.abs(coords - edge) < 1e-9)
    clear = ~near.any(axis=0).reshape(shape)
    ref_mask = ndi.affine_transform(labels, m, output_shape=shape, order=0, cval=0)
    np.testing.assert_array_equal(got["mask"][clear], ref_mask[clear])
    values = vol.astype(np.float64)
    ref = ndi.affine_transform(values, m, output_shape=shape, order=1, mode="constant")
    assert np.abs(got["image"][0] - ref).max() <= 1e-6 * np.abs(values).max()


def test_affine_transform_full_range_uint16_to_float32_precision():
    rng = np.random.default_rng(11)
    vol = rng.integers(0, 65536, (10, 11, 12)).astype(np.uint16)
    m = _random_matrix(rng, vol.shape)
    got = affine_transform(vol, m)
    ref = ndi.affine_transform(vol.astype(np.float64), m, order=1, mode="constant")
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-3)  # float32 output: ulp(65535) 0.004


def test_affine_transform_cval_and_identity():
    vol = block((6, 7, 8), np.float32)
    np.testing.assert_array_equal(affine_transform(vol, np.eye(4)), vol)
    shifted = np.eye(4)
    shifted[:3, 3] = [0, 0, 3]
    got = affine_transform(vol, shifted, cval=-5.0)
    np.testing.assert_array_equal(got[:, :, :5], vol[:, :, 3:])
    assert (got[:, :, 5:] == -5.0).all()


def test_affine_transform_rejects_bad_input():
    vol = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="order"):
        affine_transform(vol, np.eye(4), order=3)
    with pytest.raises(ValueError, match="matrix"):
        affine_transform(vol, np.eye(3))
    with pytest.raises(ValueError, match="3D"):
        affine_transform(np.zeros((4, 4)), np.eye(4))


def _all_flips_and_turns(a: np.ndarray) -> list[np.ndarray]:
    """The 48 images of a cube under np.rot90 and np.flip."""
    out = []
    for flips in itertools.product([False, True], repeat=3):
        f = a
        for axis, on in enumerate(flips):
            if on:
                f = np.flip(f, axis)
        for k0, k1 in itertools.product(range(4), range(4)):
            out.append(np.rot90(np.rot90(f, k0, (1, 2)), k1, (0, 1)))
            out.append(np.rot90(np.rot90(f, k0, (1, 2)), k1, (0, 2)))
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32])
def test_flips_and_90_degree_turns_equal_numpy_exactly(dtype):
    vol = block((7, 7, 7), dtype, seed=2)
    references = _all_flips_and_turns(vol.astype(np.float32))
    spec = Augment.preset("flips")
    seen = set()
    for seed in range(60):
        p = spec.sample(rng_for(seed), vol.shape, vol.shape)
        got = apply_cpu({"image": vol}, p)["image"][0]
        hits = [i for i, r in enumerate(references) if np.array_equal(got, r)]
        assert hits, f"seed {seed}: not a flip or turn of the input"
        seen.add(got.tobytes())
    assert len(seen) > 20


def test_a_single_flip_is_np_flip_and_a_turn_is_np_rot90():
    vol = block((6, 8, 8), np.float32, seed=3)
    flip_x = np.diag([1.0, 1.0, -1.0, 1.0])
    flip_x[2, 3] = 7
    np.testing.assert_array_equal(affine_transform(vol, flip_x), np.flip(vol, 2))
    # np.rot90(vol, 1, (1, 2)): out[z, y, x] = vol[z, x, 7 - y]
    turn = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 7], [0, 0, 0, 1]], float)
    np.testing.assert_array_equal(affine_transform(vol, turn), np.rot90(vol, 1, (1, 2)))


@pytest.mark.parametrize("preset", ["default", "cryoet", "flips"])
def test_a_labelled_voxel_lands_where_its_point_lands(preset):
    spec = Augment.preset(preset)
    out = (16, 16, 16)
    stored = stored_for(spec, 16)
    rng = np.random.default_rng(5)
    for seed in range(25):
        p = spec.sample(rng_for(seed), stored, out)
        # a point at a voxel centre, away from the crop's edge
        centre = (np.array(stored) - 1) // 2 + rng.integers(-1, 2, 3)
        mask = np.zeros(stored, np.uint8)
        mask[tuple(centre)] = 1
        blob = np.zeros(stored, np.uint8)
        blob[tuple(slice(c - 1, c + 2) for c in centre)] = 1
        points = np.array([[*centre, 2.0]], np.float32)
        done = apply_cpu({"image": mask, "mask": mask, "points": points}, p)
        moved = done["points"]
        assert moved.shape == (1, 4) and moved[0, 3] == 2.0
        # every voxel labelled 1 reads the point's voxel: it lies within half a stored voxel
        # (times the zoom) of the moved point on every axis of the stored grid
        zoom = 1.0 / np.linalg.norm(p.matrix[:3, 0])
        for o in np.argwhere(done["mask"] == 1):
            assert np.linalg.norm(o - moved[0, :3]) <= zoom * np.sqrt(3) / 2 + 1e-6
        # and the output voxel nearest the moved point reads inside the 3x3x3 blob
        nearest = tuple(np.rint(moved[0, :3]).astype(int))
        assert apply_cpu({"image": blob, "mask": blob}, p)["mask"][nearest] == 1
        if preset == "flips":  # exact maps: the voxel and the point coincide
            np.testing.assert_array_equal(np.argwhere(done["mask"] == 1)[0], moved[0, :3])


def test_points_leaving_the_output_are_dropped():
    p = AugmentParams.centre((20, 20, 20), (10, 10, 10))
    points = np.array(
        [[10, 10, 10, 1], [4.6, 5, 5, 2], [4.4, 5, 5, 3], [14.4, 5, 5, 4]], np.float32
    )
    got = apply_cpu({"image": np.zeros((20, 20, 20), np.uint8), "points": points}, p)["points"]
    np.testing.assert_array_equal(got[:, 3], [1, 2, 4])
    np.testing.assert_allclose(got[0, :3], [5, 5, 5])


def _reference_chain(vol, p, offset, scale):
    """The documented intensity chain in plain numpy (no blur, no noise)."""
    v = ndi.affine_transform(vol.astype(np.float64), p.matrix, output_shape=p.out_shape, order=1)
    v = (v - offset) * scale
    lo, hi = sorted([(float(vol.min()) - offset) * scale, (float(vol.max()) - offset) * scale])
    mean = (vol.mean(dtype=np.float64) - offset) * scale
    if p.gamma != 1:
        v = lo + (hi - lo) * np.clip((v - lo) / (hi - lo), 0, 1) ** p.gamma
    return (v - mean) * p.contrast + mean + p.brightness


@pytest.mark.parametrize("dtype", DTYPES)
def test_intensity_chain_is_the_documented_one(dtype):
    vol = block((16, 16, 16), dtype, seed=4)
    spec = Augment.from_dict(
        {
            "rotate": {"mode": "free", "max_angle": 20},
            "gamma": {"range": [0.5, 2.0]},
            "contrast": {"range": [0.5, 1.5]},
            "brightness": {"range": [-1, 1]},
        }
    )
    for seed in range(3):
        p = spec.sample(rng_for(seed), vol.shape, (10, 10, 10))
        got = apply_cpu({"image": vol}, p, offset=100.0, scale=0.01)["image"][0]
        ref = _reference_chain(vol, p, 100.0, 0.01)
        assert np.abs(got - ref).max() < 1e-5


def test_noise_is_added_after_the_chain_and_blur_before_it():
    vol = block((12, 12, 12), np.float32, seed=5)
    plain = AugmentParams.centre(vol.shape, vol.shape)
    noisy = AugmentParams.from_matrix(
        plain.matrix, vol.shape, vol.shape, noise_std=0.5, noise_seed=9
    )
    got = apply_cpu({"image": vol}, noisy, offset=50, scale=0.1)["image"][0]
    want = (vol - 50) * 0.1 + 0.5 * normal_field(9, vol.shape)
    assert np.abs(got - want).max() < 1e-5
    both = AugmentParams.from_matrix(
        plain.matrix, vol.shape, vol.shape, noise_std=0.5, noise_seed=9, blur_sigma=0.8
    )
    got = apply_cpu({"image": vol}, both, offset=50, scale=0.1)["image"][0]
    blurred = ndi.gaussian_filter((vol - 50.0) * 0.1, 0.8, mode="nearest", truncate=3.0)
    assert np.abs(got - (blurred + 0.5 * normal_field(9, vol.shape))).max() < 1e-5


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.6])
def test_blur_matches_scipy(sigma):
    vol = block((9, 10, 11), np.float32, seed=6)
    p = AugmentParams.from_matrix(np.eye(4), vol.shape, vol.shape, blur_sigma=sigma)
    got = apply_cpu({"image": vol}, p)["image"][0]
    ref = ndi.gaussian_filter(vol.astype(np.float64), sigma, mode="nearest", truncate=3.0)
    assert np.abs(got - ref).max() < 1e-4
    assert blur_weights(0.1).size == 1  # below half a voxel of radius: no blur


def test_same_key_same_output_other_epoch_other_output(everything):
    stored = stored_for(everything, 12)
    vol = block(stored, np.uint8, seed=7)
    mask = (vol > 120).astype(np.uint8)
    sample = {"image": vol, "mask": mask, "__key__": "a_z1_y2_x3"}
    a = apply_cpu(sample, everything.sample(rng_for(0, 3, 17), stored, (12, 12, 12)))
    b = apply_cpu(sample, everything.sample(rng_for(0, 3, 17), stored, (12, 12, 12)))
    c = apply_cpu(sample, everything.sample(rng_for(0, 4, 17), stored, (12, 12, 12)))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], c["image"])
    assert a["__key__"] == "a_z1_y2_x3"  # other keys pass through


def test_threads_do_not_change_the_result(everything):
    stored = stored_for(everything, 16)
    vol = block(stored, np.float32, seed=8)
    mask = (vol > 100).astype(np.uint8)
    for seed in range(3):
        p = everything.sample(rng_for(seed), stored, (16, 16, 16))
        one = apply_cpu({"image": vol, "mask": mask}, p, threads=1)
        two = apply_cpu({"image": vol, "mask": mask}, p, threads=2)
        np.testing.assert_array_equal(one["image"], two["image"])
        np.testing.assert_array_equal(one["mask"], two["mask"])


def test_masks_of_any_integer_dtype_and_1xdxhxw_images():
    vol = block((10, 10, 10), np.uint16, seed=9)
    labels = (vol // 40).astype(np.int32) * 1000
    p = Augment(rotate=Rotate("free"), shift=Shift(max=1)).sample(
        rng_for(1), (10, 10, 10), (6, 6, 6)
    )
    a = apply_cpu({"image": vol[None], "mask": labels}, p)
    b = apply_cpu({"image": vol, "mask": labels.astype(np.uint16)}, p)
    assert a["image"].shape == (1, 6, 6, 6) and a["mask"].dtype == np.int64
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert set(np.unique(a["mask"])) <= set(np.unique(labels)) | {0}


def test_shape_errors_name_the_shapes():
    p = AugmentParams.centre((10, 10, 10), (6, 6, 6))
    with pytest.raises(ShapeMismatch, match=r"\(8, 10, 10\)"):
        apply_cpu({"image": np.zeros((8, 10, 10), np.uint8)}, p)
    with pytest.raises(ShapeMismatch, match="mask"):
        apply_cpu({"image": np.zeros((10, 10, 10)), "mask": np.zeros((9, 10, 10), int)}, p)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        apply_cpu({"image": np.zeros((2, 10, 10, 10))}, p)


@settings(max_examples=40, deadline=None)
@given(
    turn=st.integers(0, 23),
    flips=st.tuples(*[st.sampled_from([1.0, -1.0])] * 3),
    shift=st.tuples(*[st.integers(-2, 2)] * 3),
    dtype=st.sampled_from(DTYPES),
    chain=st.tuples(st.floats(0.5, 2.0), st.floats(0.5, 1.5), st.floats(-1, 1)),
)
def test_flips_and_turns_take_the_exact_path_and_match_the_kernel(turn, flips, shift, dtype, chain):
    """A signed axis permutation with a whole-voxel offset reads the stored voxels themselves
    (no resampling); the result is the documented chain of scipy's resampling, the mask that of
    nearest sampling, the noise the same field, whether the output stays inside or not."""
    from streamvol.augment._sample import cube_rotations

    vol = block((9, 9, 9), dtype, seed=turn)
    labels = (np.arange(vol.size).reshape(vol.shape) % 5).astype(np.uint8)
    linear = cube_rotations()[turn] @ np.diag(flips)
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = 4.0 + np.array(shift) - linear @ np.full(3, 3.0)  # 7^3 out, centred, then shifted
    gamma, contrast, brightness = chain
    p = AugmentParams.from_matrix(
        m, vol.shape, (7, 7, 7), gamma=gamma, contrast=contrast, brightness=brightness
    )
    inside = exact_view(vol, m, (7, 7, 7)) is not None
    assert inside == (max(abs(s) for s in shift) <= 1)
    got = apply_cpu({"image": vol, "mask": labels}, p, offset=50.0, scale=0.02)
    np.testing.assert_allclose(got["image"][0], _reference_chain(vol, p, 50.0, 0.02), atol=1e-5)
    ref_mask = ndi.affine_transform(labels, m, output_shape=(7, 7, 7), order=0, cval=0)
    np.testing.assert_array_equal(got["mask"], ref_mask)
    noisy = AugmentParams.from_matrix(m, vol.shape, (7, 7, 7), noise_std=0.5, noise_seed=turn)
    clean = apply_cpu({"image": vol}, AugmentParams.from_matrix(m, vol.shape, (7, 7, 7)))
    np.testing.assert_allclose(
        apply_cpu({"image": vol}, noisy)["image"][0] - clean["image"][0],
        0.5 * normal_field(turn, (7, 7, 7)),
        atol=1e-5,
    )


def test_apply_cpu_writes_into_out_or_names_what_it_needs():
    vol = block((12, 12, 12), np.uint16, seed=8)
    p = Augment.preset("default").sample(rng_for(1), vol.shape, (8, 8, 8))
    want = apply_cpu({"image": vol}, p)["image"]
    out = np.full((1, 8, 8, 8), np.nan, np.float32)
    got = apply_cpu({"image": vol}, p, out=out)["image"]
    assert got is out and np.array_equal(out, want)
    labels = (vol % 3).astype(np.uint8)
    warm = apply_cpu({"image": vol, "mask": labels}, p, prefetch=True)  # same result, sooner
    cold = apply_cpu({"image": vol, "mask": labels}, p)
    assert np.array_equal(warm["image"], want) and np.array_equal(warm["mask"], cold["mask"])
    with pytest.raises(ValueError, match=r"float32 array of shape \(1, 8, 8, 8\), got float32"):
        apply_cpu({"image": vol}, p, out=np.empty((8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        apply_cpu({"image": vol}, p, out=np.empty((1, 8, 8, 16), np.float32)[..., ::2])


@pytest.mark.parametrize("seed", range(6))
def test_the_part_a_draw_reads_gives_the_output_of_the_whole_block(seed, everything):
    """``reads()`` bounds every stored voxel a draw reads (rotation, zoom, shift, elastic), and
    ``within()`` applies the draw to that part alone: same image (float32 rounding), mask
    (except interpolation ties) and points as from the whole stored block. Gamma and contrast,
    drawn here on two seeds in three, take the whole block's statistics (``stats``), as the GPU
    backend does, also with the block's extremes where the draw does not read."""
    from scipy.ndimage import gaussian_filter

    crop = 10
    stored = stored_for(everything, crop)
    image = block(stored, seed=seed)
    mask = (gaussian_filter(image, 2) > 100).astype(np.uint8)
    points = np.array([[s / 2 + 1, s / 2 - 1, s / 2, 1] for s in stored[:1]], np.float32)
    gamma, contrast = [(1.0, 1.0), (0.75, 1.3), (1.4, 0.7)][seed % 3]
    params = everything.sample(rng_for(seed), stored, (crop,) * 3)
    params = dataclasses.replace(params, gamma=gamma, contrast=contrast)
    start, stop = params.reads()
    assert all(0 <= a < b <= n for a, b, n in zip(start, stop, stored, strict=True))
    assert np.prod(np.subtract(stop, start)) < np.prod(stored)  # a margin for any draw
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    unread = np.ones(stored, bool)
    unread[box] = False
    far = np.argwhere(unread)
    image[tuple(far[0])], image[tuple(far[-1])] = 600.0, -300.0  # outside [0, 200)
    whole = apply_cpu({"image": image, "mask": mask, "points": points}, params)
    cut = {
        "image": image[box],
        "mask": mask[box],
        "points": points - np.array([*start, 0], np.float32),
    }
    part = apply_cpu(cut, params.within(start, stop), stats=block_stats(image))
    np.testing.assert_allclose(part["image"], whole["image"], rtol=1e-5, atol=1e-4)
    if params.needs_block_stats:  # the part's own statistics would not do
        own = apply_cpu(cut, params.within(start, stop))["image"]
        assert np.abs(own - whole["image"]).max() > 1e-2
    assert (part["mask"] != whole["mask"]).mean() < 1e-3
    np.testing.assert_allclose(part["points"], whole["points"], atol=1e-4)


@pytest.mark.parametrize("shift", [(0.5, 0.5, 0.5), (0.5, -0.5, 1.5), (2.5, 0.0, -1.5)])
@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, -1)])
def test_masks_on_exact_half_voxel_ties_equal_scipy_nearest(shift, flips):
    """Every output voxel reads a coordinate exactly halfway between two stored voxels: masks
    round such ties as scipy's order 0 does (halves up), with no tolerance."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 9, (10, 11, 12)).astype(np.uint8)
    vol = labels.astype(np.float32)
    shape = (6, 7, 8)
    m = np.eye(4)
    m[:3, :3] = np.diag(flips)
    centre_in, centre_out = (np.array(vol.shape) - 1) / 2, (np.array(shape) - 1) / 2
    m[:3, 3] = centre_in + np.array(shift) - np.diag(flips) @ centre_out
    coords = m[:3, :3] @ np.indices(shape).reshape(3, -1) + m[:3, 3:]
    halves = [np.all(np.abs(c - np.floor(c) - 0.5) < 1e-12) for c in coords]
    assert halves == [s % 1 == 0.5 for s in shift] and any(halves)
    got = apply_cpu({"image": vol, "mask": labels}, AugmentParams.from_matrix(m, vol.shape, shape))
    ref = ndi.affine_transform(labels, m, output_shape=shape, order=0, cval=0)
    np.testing.assert_array_equal(got["mask"], ref)
