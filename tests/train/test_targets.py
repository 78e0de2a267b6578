"""Detection targets: balls and Gaussians against brute-force numpy oracles, and targets that
follow the augmentation (a rotated crop's ball sits on the rotated pick, where the image's
particle went)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvol.errors import BadOption
from streamvol.train.targets import TargetSpec, make_targets

SHAPE = (12, 14, 16)


def _grid(shape=SHAPE) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)


def _batch(rows: list[list[list[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Points padded as the loader pads them, with one junk row of padding per sample."""
    n = max(len(r) for r in rows) + 1
    points = torch.full((len(rows), n, 4), 99.0)
    for i, r in enumerate(rows):
        if r:
            points[i, : len(r)] = torch.tensor(r)
    return points, torch.tensor([len(r) for r in rows])


def test_sphere_balls_match_a_brute_force_oracle():
    spec = TargetSpec("sphere", radii=(6.0, 9.0), scale=0.5, point_offset=1)
    rows = [[[5.3, 6.6, 7.2, 1.0]], [[2.0, 3.0, 14.6, 2.0], [9.0, 10.0, 3.0, 1.0]], []]
    points, counts = _batch(rows)
    target = make_targets(points, counts, SHAPE, spec).numpy()
    assert target.shape == (3, *SHAPE) and target.dtype == np.int64
    grid = _grid()
    for b, row in enumerate(rows):
        expected = np.zeros(SHAPE, np.int64)
        best = np.full(SHAPE, np.inf)
        for z, y, x, c in row:
            k = int(c) - 1
            r = max(0.5 * spec.radii[k], 1.0)
            d = np.linalg.norm(grid - [z, y, x], axis=-1) / r
            win = (d <= 1.0) & (d < best)
            expected[win], best[win] = k + 1, d[win]
        np.testing.assert_array_equal(target[b], expected)
    assert (target[2] == 0).all()  # padding rows draw nothing


def test_overlapping_balls_go_to_the_nearest_pick_relative_to_its_radius():
    spec = TargetSpec("sphere", radii=(4.0, 12.0), scale=1.0)
    points, counts = _batch([[[6, 7, 5, 0], [6, 7, 10, 1]]])
    target = make_targets(points, counts, SHAPE, spec)[0]
    # x = 8: 3 voxels from the small pick (3/4 of its radius), 2 from the large (2/12): large
    assert target[6, 7, 8] == 2 and target[6, 7, 6] == 1 and target[6, 7, 5] == 1


def test_heatmap_gaussians_peak_at_one_on_the_nearest_voxel():
    spec = TargetSpec("heatmap", radii=(8.0, 4.0), sigma_scale=0.25)
    rows = [[[5.4, 6.6, 7.2, 0], [5.0, 6.0, 12.0, 0], [3.0, 3.0, 3.0, 1]]]
    points, counts = _batch(rows)
    heat = make_targets(points, counts, SHAPE, spec)[0].numpy()
    assert heat.shape == (2, *SHAPE) and heat.dtype == np.float32
    grid = _grid()
    for k in range(2):
        expected = np.zeros(SHAPE)
        sigma = max(0.25 * spec.radii[k], 0.5)
        for z, y, x, c in rows[0]:
            if int(c) != k:
                continue
            d2 = ((grid - np.floor(np.array([z, y, x]) + 0.5)) ** 2).sum(-1)
            g = np.where(d2 <= (3 * sigma) ** 2, np.exp(-d2 / (2 * sigma**2)), 0.0)
            expected = np.maximum(expected, g)
        np.testing.assert_allclose(heat[k], expected, atol=1e-6)
    assert heat[0, 5, 7, 7] == 1.0 and heat[1, 3, 3, 3] == 1.0


def test_points_outside_the_crop_draw_their_inside_part_and_bad_ids_raise():
    spec = TargetSpec("sphere", radii=(8.0,), scale=1.0)
    points, counts = _batch([[[-3.0, 7.0, 8.0, 0]]])
    target = make_targets(points, counts, SHAPE, spec)[0]
    assert target[0:6, 7, 8].tolist() == [1] * 6 and target[6, 7, 8] == 0  # reach: 8 voxels
    points, counts = _batch([[[3.0, 7.0, 8.0, 2]]])
    with pytest.raises(ValueError, match="class id 2 is not a particle type"):
        make_targets(points, counts, SHAPE, spec)


@pytest.mark.parametrize("kind", ["sphere", "heatmap"])
def test_on_anisotropic_voxels_targets_are_round_in_space(kind):
    """z voxels 3x as long as y and x: a ball (Gaussian) of radius r mean voxels spans r / 1.8
    z voxels and r / 0.6 y, x voxels; against a brute-force oracle in space."""
    spacing = (1.8, 0.6, 0.6)  # voxel size (3, 1, 1) over its mean 5/3
    spec = TargetSpec(kind, radii=(6.0, 3.0), scale=0.5, sigma_scale=0.5, spacing=spacing)
    rows = [[[5.3, 6.6, 7.2, 0], [8.0, 3.0, 12.0, 1]]]
    points, counts = _batch(rows)
    got = make_targets(points, counts, SHAPE, spec)[0].numpy()
    grid = _grid() * spacing
    best = np.full(SHAPE, np.inf)
    expected = np.zeros(SHAPE, np.int64) if kind == "sphere" else np.zeros((2, *SHAPE))
    for z, y, x, c in rows[0]:
        k = int(c)
        if kind == "sphere":
            d = np.linalg.norm(grid - np.multiply([z, y, x], spacing), axis=-1) / 3.0 * (k + 1)
            win = (d <= 1.0) & (d < best)
            expected[win], best[win] = k + 1, d[win]
        else:
            sigma = 0.5 * spec.radii[k]
            centre = np.floor(np.array([z, y, x]) + 0.5) * spacing
            d2 = ((grid - centre) ** 2).sum(-1)
            g = np.where(d2 <= (3 * sigma) ** 2, np.exp(-d2 / (2 * sigma**2)), 0.0)
            expected[k] = np.maximum(expected[k], g)
    if kind == "sphere":
        np.testing.assert_array_equal(got, expected)
        assert (got == 1).any(axis=(1, 2)).sum() == 3  # 3 z planes of a 3-voxel ball: r / 1.8
    else:
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_spec_checks_its_values():
    with pytest.raises(BadOption, match="target='ball'"):
        TargetSpec("ball", radii=(1.0,))
    with pytest.raises(ValueError, match="radii"):
        TargetSpec("sphere", radii=(0.0,))
    assert TargetSpec("sphere", radii=(1.0, 2.0)).channels == 3
    assert TargetSpec("heatmap", radii=(1.0, 2.0)).channels == 2
    with pytest.raises(ValueError, match="voxel spacing"):
        TargetSpec("sphere", radii=(1.0,), spacing=(1.0, 0.0, 1.0))


def _centroid(weights: np.ndarray) -> np.ndarray:
    grid = _grid(weights.shape)
    return (grid * weights[..., None]).sum((0, 1, 2)) / weights.sum()


def test_targets_follow_the_augmented_image(tmp_path):
    """Through the loader the trainer uses: a bright ball at each pick, free rotation, flips and
    shifts; the target ball of each augmented crop is centred where the image's ball went."""
    from streamvol.augment import Augment
    from streamvol.shard import parse_config, shard
    from streamvol.stream import open_shards

    shape = (40, 40, 40)
    picks = [(20.0, 17.0, 23.0), (12.0, 26.0, 15.0)]
    grid = _grid(shape)
    volume = np.zeros(shape, np.float32)
    for p in picks:
        volume[np.linalg.norm(grid - p, axis=-1) <= 3.0] = 1.0
    np.save(tmp_path / "vol.npy", volume)
    (tmp_path / "vol.csv").write_text("z,y,x\n" + "".join(f"{z},{y},{x}\n" for z, y, x in picks))
    out = tmp_path / "shards"
    shard(parse_config([tmp_path / "vol.npy"], plan="points", crop="16", split="1,0,0"), out)
    spec = TargetSpec("sphere", radii=(6.0,), scale=0.5)  # a ball of radius 3, as drawn
    augment = Augment.preset("default")
    ds = open_shards(out, augment=augment, normalize=(0.0, 1.0), seed=3, shuffle=False)
    checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for sample in ds:
            image, points = sample["image"][0].numpy(), sample["points"]
            target = make_targets(points[None], torch.tensor([len(points)]), image.shape, spec)
            for z, y, x, _ in points.tolist():
                ball = (target[0] == 1).numpy()
                mine = np.linalg.norm(_grid(image.shape) - [z, y, x], axis=-1) <= 4.0
                if (
                    mine.sum() < 200
                    or np.any(np.array([z, y, x]) < 4)
                    or np.any(np.array([z, y, x]) > 11)
                ):
                    continue  # a ball cut by the crop's edge: its centroid moves inward
                bright = np.where(mine, np.clip(image, 0, None), 0)
                target_centre = _centroid(ball & mine)
                np.testing.assert_allclose(target_centre, [z, y, x], atol=0.25)
                np.testing.assert_allclose(_centroid(bright), target_centre, atol=0.3)
                checked += 1
    assert checked >= 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["sphere", "heatmap"])
def test_targets_on_cuda_equal_the_cpu_ones(kind):
    spec = TargetSpec(kind, radii=(6.0, 9.0), point_offset=1)
    points, counts = _batch([[[5.3, 6.6, 7.2, 1.0]], [[2.0, 3.0, 14.6, 2.0]]])
    cpu = make_targets(points, counts, SHAPE, spec)
    gpu = make_targets(points.cuda(), counts.cuda(), SHAPE, spec)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


def test_validation_matches_crop_picks_in_space_on_anisotropic_voxels():
    """z voxels 3x as long: a peak 2 z voxels from its pick is 3.6 mean voxels away, beyond half
    the radius (3); one 4 y voxels away is 2.4, within it (in voxels it is the other way)."""
    from streamvol.train.detection import VAL_GRID, crop_counts

    anisotropic = TargetSpec("sphere", radii=(6.0,), spacing=(1.8, 0.6, 0.6))
    isotropic = TargetSpec("sphere", radii=(6.0,))
    for peak, pick, in_space in [((7, 10, 6), (5, 10, 6), False), ((4, 14, 18), (4, 10, 18), True)]:
        probs = np.zeros((1, 16, 24, 24), np.float32)
        probs[(0, *peak)] = 0.9
        points = np.array([[*pick, 0]], np.float32)
        counts = crop_counts(anisotropic, probs, points)
        assert counts.shape == (1, len(VAL_GRID), 3)
        hit, miss = [1, 0, 0], [0, 1, 1]  # TP, FP, FN
        assert counts[0, 0].tolist() == (hit if in_space else miss)
        assert crop_counts(isotropic, probs, points)[0, 0].tolist() == (miss if in_space else hit)
