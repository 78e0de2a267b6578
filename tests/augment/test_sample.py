"""The sampler: keyed and pure, matrices of the documented form, and the auto margin suffices."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.augment import Augment, AugmentParams, Rotate, Shift, apply_cpu
from streamvol.augment._sample import cube_rotations, rotation_about, sample_params

from .conftest import rng_for, stored_for


def _same(a: AugmentParams, b: AugmentParams) -> bool:
    return np.array_equal(a.matrix, b.matrix) and (
        a.gamma,
        a.contrast,
        a.brightness,
        a.noise_std,
        a.blur_sigma,
        a.noise_seed,
    ) == (b.gamma, b.contrast, b.brightness, b.noise_std, b.blur_sigma, b.noise_seed)


def test_same_key_same_params_other_epoch_other_params(everything):
    a = everything.sample(rng_for(1, 0, 99), (40, 40, 40), (16, 16, 16))
    b = everything.sample(rng_for(1, 0, 99), (40, 40, 40), (16, 16, 16))
    c = everything.sample(rng_for(1, 1, 99), (40, 40, 40), (16, 16, 16))
    assert _same(a, b)
    assert not _same(a, c)


def test_matrix_maps_output_centre_to_block_centre_and_inverse_is_inverse():
    spec = Augment(rotate=Rotate("free"))
    p = spec.sample(rng_for(3), (41, 50, 60), (21, 30, 40))
    centre_out = np.array([10.0, 14.5, 19.5, 1.0])
    np.testing.assert_allclose(p.matrix @ centre_out, [20.0, 24.5, 29.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(p.inverse @ p.matrix, np.eye(4), atol=1e-12)
    linear = p.matrix[:3, :3]
    np.testing.assert_allclose(linear @ linear.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(linear) > 0


def test_90_mode_draws_only_cube_rotations_that_keep_the_shape():
    spec = Augment(rotate=Rotate("90"))
    seen = set()
    for seed in range(300):
        p = spec.sample(rng_for(seed), (8, 16, 16), (8, 16, 16))
        linear = p.matrix[:3, :3]
        assert np.array_equal(np.abs(linear) @ [8, 16, 16], [8, 16, 16])
        seen.add(linear.tobytes())
    assert len(seen) == 8  # 4 turns about z, 4 half-turns about axes in the y-x plane
    cube = {
        spec.sample(rng_for(s), (8, 8, 8), (8, 8, 8)).matrix[:3, :3].tobytes() for s in range(400)
    }
    assert len(cube) == 24
    assert len(cube_rotations()) == 24


def test_z_rotation_keeps_z_without_tilt_and_tilts_at_most_max_tilt():
    flat = Augment(rotate=Rotate("z"))
    tilted = Augment(rotate=Rotate("z", max_tilt=10.0))
    for seed in range(50):
        m = flat.sample(rng_for(seed), (9, 9, 9), (9, 9, 9)).matrix[:3, :3]
        np.testing.assert_allclose(m[:, 0], [1, 0, 0], atol=1e-12)
        t = tilted.sample(rng_for(seed), (9, 9, 9), (9, 9, 9)).matrix[:3, :3]
        assert np.degrees(np.arccos(np.clip(t[0, 0], -1, 1))) <= 10.0 + 1e-9


def test_neutral_steps_draw_neutral_values():
    p = Augment().sample(rng_for(0), (10, 10, 10), (6, 6, 6))
    assert (p.gamma, p.contrast, p.brightness, p.noise_std, p.blur_sigma) == (1, 1, 0, 0, 0)
    assert p.elastic is None
    np.testing.assert_array_equal(p.matrix, AugmentParams.centre((10, 10, 10), (6, 6, 6)).matrix)


def _corners(out_shape):
    return np.array([[*c, 1.0] for c in itertools.product(*[(0, n - 1) for n in out_shape])])


@settings(max_examples=150, deadline=None)
@given(
    crop=st.sampled_from([8, 9, 16, (6, 10, 14)]),
    axis=st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(
        lambda a: np.linalg.norm(a) > 1e-3
    ),
    angle=st.floats(-np.pi, np.pi),
    shift=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_auto_margin_keeps_every_free_rotation_inside_the_block(crop, axis, angle, shift, seed):
    spec = Augment(rotate=Rotate("free"), shift=Shift(max=shift))
    out = crop if isinstance(crop, tuple) else (crop,) * 3
    stored = tuple(o + 2 * m for o, m in zip(out, spec.margin(crop), strict=True))
    # the drawn shift, with the rotation replaced by the hypothesis-chosen one
    drawn = sample_params(spec, np.random.default_rng(seed), stored, out)
    r = rotation_about(axis, angle)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = drawn.matrix[:3, 3] + (drawn.matrix[:3, :3] - r) @ ((np.array(out) - 1) / 2)
    reach = _corners(out) @ m.T  # an affine map of a box: its extremes are at the corners
    assert (reach[:, :3] >= 0).all()
    assert (reach[:, :3] <= np.array(stored) - 1 + 1e-9).all()
    # and the kernel agrees: a block of ones, outside reads 0, so no voxel may come out 0
    p = AugmentParams.from_matrix(m, stored, out)
    got = apply_cpu({"image": np.ones(stored, np.float32)}, p)["image"]
    assert np.all(got > 0.999)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), preset=st.sampled_from(["default", "cryoet", "flips"]))
def test_auto_margin_suffices_for_the_presets(seed, preset):
    spec = Augment.preset(preset)
    stored = stored_for(spec, 12)
    p = spec.sample(np.random.default_rng(seed), stored, (12, 12, 12))
    reach = _corners((12, 12, 12)) @ p.matrix.T
    assert (reach[:, :3] >= 0).all()
    assert (reach[:, :3] <= np.array(stored) - 1 + 1e-9).all()


aspects = st.tuples(*[st.sampled_from([1.0, 1.5, 2.0, 3.0, 5.0]) for _ in range(3)])


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    preset=st.sampled_from(["default", "cryoet"]),
    voxel=aspects,
    crop=st.sampled_from([12, (8, 16, 16), (16, 10, 12)]),
)
def test_on_anisotropic_voxels_rotations_turn_physical_space_inside_the_auto_margin(
    seed, preset, voxel, crop
):
    """On voxels of size ``voxel`` the geometry is a rotation (and zoom) of physical space,
    A M A^-1 = R / zoom with R orthogonal, and the spec's own margin holds every draw."""
    spec = Augment.preset(preset).on_voxels([100 * v for v in voxel])
    out = crop if isinstance(crop, tuple) else (crop,) * 3
    stored = tuple(o + 2 * m for o, m in zip(out, spec.margin(crop), strict=True))
    p = spec.sample(np.random.default_rng(seed), stored, out)
    a = np.diag(voxel)
    physical = a @ p.matrix[:3, :3] @ np.linalg.inv(a)
    gram = physical @ physical.T
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(3), atol=1e-9)  # R R^T / zoom^2
    assert 0.9**2 - 1e-9 <= 1 / gram[0, 0] <= 1.1**2 + 1e-9
    reach = _corners(out) @ p.matrix.T  # an affine map of a box: its extremes are at corners
    assert (reach[:, :3] >= -1e-9).all()
    assert (reach[:, :3] <= np.array(stored) - 1 + 1e-9).all()


def test_cubic_or_unknown_voxels_draw_exactly_what_the_plain_spec_draws(everything):
    for voxel in (None, (7.0, 7.0, 7.0)):
        bound = everything.on_voxels(voxel)
        assert bound == everything and bound.margin(16) == everything.margin(16)
        a = bound.sample(rng_for(5, 2, 11), (40, 40, 40), (16, 16, 16))
        assert _same(a, everything.sample(rng_for(5, 2, 11), (40, 40, 40), (16, 16, 16)))


def test_on_anisotropic_voxels_90_degree_turns_only_swap_axes_of_equal_voxel_size():
    spec = Augment(rotate=Rotate("90")).on_voxels((300, 100, 100))
    seen = set()
    for seed in range(200):
        linear = spec.sample(rng_for(seed), (8, 8, 8), (8, 8, 8)).matrix[:3, :3]
        assert abs(linear[0, 0]) == 1.0  # z stays z: exact, no resampling across z
        seen.add(linear.tobytes())
    assert len(seen) == 8  # 4 turns about z, 4 half-turns about axes in the y-x plane
    assert spec.margin(8) == (0, 0, 0)


def test_a_physical_ball_on_anisotropic_voxels_stays_a_ball_under_free_rotation():
    """A ball sampled on 3:1 voxels is an ellipsoid in the voxel grid: turning physical space
    keeps it (up to boundary voxels), where turning the voxel grid would tilt the ellipsoid."""
    voxel = (3.0, 1.0, 1.0)
    spec = Augment(rotate=Rotate("free"))
    bound = spec.on_voxels(voxel)
    out = (14, 40, 40)
    stored = tuple(o + 2 * m for o, m in zip(out, bound.margin(out), strict=True))
    z, y, x = np.indices(stored, dtype=np.float64)
    c = (np.array(stored) - 1) / 2
    ball = (((z - c[0]) * 3) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= 14.0**2
    expected = ball[tuple(slice(m, m + o) for m, o in zip(bound.margin(out), out, strict=True))]
    for seed in range(5):
        rng = rng_for(seed)
        physical = apply_cpu({"image": ball.astype(np.float32), "mask": ball.astype(np.uint8)},
                             bound.sample(rng, stored, out))["mask"]  # fmt: skip
        grid = apply_cpu({"image": ball.astype(np.float32), "mask": ball.astype(np.uint8)},
                         spec.sample(rng_for(seed), stored, out))["mask"]  # fmt: skip
        iou = (physical & expected).sum() / (physical | expected).sum()
        assert iou > 0.85, (seed, iou)  # 0.90-0.91: a z radius of 4.7 voxels has a thick rim
        assert (grid & expected).sum() / (grid | expected).sum() < 0.6  # 0.32-0.51
