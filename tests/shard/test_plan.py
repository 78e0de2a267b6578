"""Tests for streamvol.shard.plan: grid, point and sample plans, boxes and margins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.errors import BadLabels, BadOption, CropTooLarge, PointsOutsideVolume
from streamvol.shard.plan import (
    Crop,
    Plan,
    PlanSource,
    as_zyx,
    crop_box,
    plan_grid,
    plan_points,
    plan_samples,
    rotation_margin,
)
from streamvol.shard.regions import plan_regions


def _centres(plan: Plan) -> list[tuple[int, int, int]]:
    return [c.centre for c in plan.crops]


def _is_sorted(plan: Plan, order: list[str]) -> bool:
    keys = [(order.index(c.source), c.centre) for c in plan.crops]
    return keys == sorted(keys)


class TestAsZyx:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (64, (64, 64, 64)),
            (np.int64(8), (8, 8, 8)),
            ((32, 64, 48), (32, 64, 48)),
            ([1, 2, 3], (1, 2, 3)),
            ("64", (64, 64, 64)),
            ("32,64,64", (32, 64, 64)),
            (" 32 , 64 ,64 ", (32, 64, 64)),
        ],
    )
    def test_accepts(self, value, expected):
        out = as_zyx(value)
        assert out == expected
        assert all(type(v) is int for v in out)

    @pytest.mark.parametrize(
        "value", [0, -4, (32, 0, 32), "32,64", "a", "32,64,64,64", 32.0, (1, 2), True, None, "1.5"]
    )
    def test_rejects_and_names_value(self, value):
        with pytest.raises(ValueError, match=repr(value).replace("(", r"\(").replace(")", r"\)")):
            as_zyx(value)


class TestCrop:
    def test_key_format(self):
        crop = Crop("TS_5-4", (1, 22, 333), 2)
        assert crop.key == "TS_5-4_z1_y22_x333"
        assert "." not in crop.key

    def test_centre_normalised_to_ints(self):
        crop = Crop("a", (np.int64(1), np.int32(2), 3))
        assert crop.centre == (1, 2, 3)
        assert all(type(v) is int for v in crop.centre)
        assert crop.label == -1

    @pytest.mark.parametrize("source", ["a.b", "", "a/b", "a b", 3])
    def test_rejects_unsafe_source(self, source):
        with pytest.raises(ValueError, match="source id"):
            Crop(source, (0, 0, 0))

    @given(
        st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
        st.tuples(*[st.integers(0, 10**6)] * 3),
    )
    def test_key_never_has_a_dot(self, source, centre):
        assert "." not in Crop(source, centre).key


class TestBoxAndMargin:
    def test_crop_box_even_and_odd(self):
        assert crop_box((10, 10, 10), 8, 0) == ((6, 14), (6, 14), (6, 14))
        assert crop_box((10, 20, 30), (8, 7, 4), 2) == ((4, 16), (15, 26), (26, 34))
        assert crop_box((0, 0, 0), 4, (1, 2, 3)) == ((-3, 3), (-4, 4), (-5, 5))

    def test_crop_box_holds_the_crop_centred(self):
        for c in range(1, 12):
            ((start, stop),) = crop_box((50, 50, 50), c, 3)[:1]
            assert stop - start == c + 6
            assert start + 3 + c // 2 == 50

    @pytest.mark.parametrize(("c", "m"), [(64, 24), (32, 12), (96, 36), (1, 1), (128, 47)])
    def test_rotation_margin_cube(self, c, m):
        assert rotation_margin(c) == (m, m, m)
        assert m == math.ceil(c * (math.sqrt(3) - 1) / 2)

    def test_rotation_margin_adds_shift(self):
        assert rotation_margin(64, 5) == (29, 29, 29)
        assert rotation_margin(64, (1, 2, 3)) == (25, 26, 27)

    def test_rotation_margin_non_cube_covers_the_diagonal(self):
        crop = (32, 64, 64)
        margin = rotation_margin(crop)
        half_diagonal = math.sqrt(sum(c * c for c in crop)) / 2
        for c, m in zip(crop, margin, strict=True):
            assert c / 2 + m >= half_diagonal
            assert c / 2 + m - 1 < half_diagonal

    def test_rotation_margin_rejects_negative_shift(self):
        with pytest.raises(ValueError, match="shift"):
            rotation_margin(64, -1)


class TestPlanSource:
    def test_defaults_and_read_only(self):
        source = PlanSource("a", (10, 10, 10), points=[[1.0, 2.0, 3.0]])
        assert source.point_labels.tolist() == [0]
        assert source.point_radii.tolist() == [0.0]
        with pytest.raises(ValueError):
            source.points[0, 0] = 5

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"points": np.zeros((2, 2))},
            {"points": [[np.nan, 1, 1]]},
            {"points": np.zeros((2, 3)), "point_labels": [1]},
            {"points": np.zeros((2, 3)), "point_labels": [0.5, 1.0]},
            {"points": np.zeros((1, 3)), "point_radii": [-1.0]},
            {"label": -2},
        ],
    )
    def test_rejects_bad_labels(self, kwargs):
        with pytest.raises(BadLabels, match="'src'"):
            PlanSource("src", (10, 10, 10), **kwargs)

    def test_rejects_bad_shape(self):
        with pytest.raises(ValueError, match="shape"):
            PlanSource("src", (10, 0, 10))


class TestGrid:
    def test_exact_centres_with_flush_last_tile(self):
        plan = plan_grid([PlanSource("v", (64, 40, 32), label=2)], (32, 16, 32))
        zs, ys, xs = (sorted({c[i] for c in _centres(plan)}) for i in range(3))
        assert zs == [16, 48]
        assert ys == [8, 24, 32]  # starts 0, 16 and the flush 24
        assert xs == [16]
        assert len(plan) == 2 * 3 * 1
        assert {c.label for c in plan.crops} == {2}
        assert _is_sorted(plan, ["v"])

    def test_stride_overlaps(self):
        plan = plan_grid([PlanSource("v", (8, 8, 20))], (8, 8, 8), stride=(8, 8, 5))
        assert [c[2] for c in _centres(plan)] == [4, 9, 14, 16]

    def test_covers_every_voxel(self):
        shape, crop = (37, 20, 9), (8, 6, 9)
        plan = plan_grid([PlanSource("v", shape)], crop, stride=(5, 6, 4))
        covered = np.zeros(shape, bool)
        for c in plan.crops:
            covered[tuple(slice(a, b) for a, b in crop_box(c.centre, crop, 0))] = True
        assert covered.all()

    def test_crop_equal_to_volume_is_one_tile(self):
        plan = plan_grid([PlanSource("v", (16, 16, 16))], 16)
        assert _centres(plan) == [(8, 8, 8)]

    def test_crop_too_large_names_source(self):
        with pytest.raises(CropTooLarge, match=r"'small'.*\(64, 64, 64\).*\(32, 100, 100\)"):
            plan_grid([PlanSource("small", (32, 100, 100))], 64)

    def test_pad_centres_oversized_axis(self):
        plan = plan_grid([PlanSource("small", (33, 128, 64))], 64, pad=True)
        assert _centres(plan) == [(16, 32, 32), (16, 96, 32)]

    def test_order_follows_source_order(self):
        sources = [PlanSource("b", (16, 16, 16)), PlanSource("a", (16, 16, 16))]
        plan = plan_grid(sources, 8)
        assert [c.source for c in plan.crops] == ["b"] * 8 + ["a"] * 8
        assert _is_sorted(plan, ["b", "a"])

    def test_class_names_kept_and_labels_checked(self):
        plan = plan_grid([PlanSource("a", (8, 8, 8), label=1)], 8, class_names=("x", "y"))
        assert plan.class_names == ("x", "y")
        with pytest.raises(BadLabels, match="'a'"):
            plan_grid([PlanSource("a", (8, 8, 8), label=2)], 8, class_names=("x", "y"))

    def test_duplicate_source_ids(self):
        with pytest.raises(ValueError, match="'a'"):
            plan_grid([PlanSource("a", (8, 8, 8)), PlanSource("a", (8, 8, 8))], 8)

    @settings(max_examples=60, deadline=None)
    @given(
        shape=st.tuples(*[st.integers(1, 40)] * 3),
        crop=st.tuples(*[st.integers(1, 16)] * 3),
        stride=st.tuples(*[st.integers(1, 16)] * 3),
    )
    def test_grid_properties(self, shape, crop, stride):
        plan = plan_grid([PlanSource("v", shape)], crop, stride=stride, pad=True)
        keys = [c.key for c in plan.crops]
        assert len(keys) == len(set(keys))
        assert _is_sorted(plan, ["v"])
        for c in plan.crops:
            assert all(0 <= v < n for v, n in zip(c.centre, shape, strict=True))
            for (start, stop), n, s in zip(crop_box(c.centre, crop, 0), shape, crop, strict=True):
                assert (start >= 0 and stop <= n) or s > n


class TestSamples:
    def test_one_centred_crop_per_source(self):
        sources = [PlanSource("a", (10, 21, 30), label=0), PlanSource("b", (4, 4, 4), label=1)]
        plan = plan_samples(sources, 16, class_names=("x", "y"))
        assert [(c.source, c.centre, c.label) for c in plan.crops] == [
            ("a", (5, 10, 15), 0),
            ("b", (2, 2, 2), 1),
        ]


def _points_source(points, labels=None, radii=None, shape=(40, 40, 40), sid="p"):
    return PlanSource(
        sid,
        shape,
        points=np.asarray(points, float),
        point_labels=None if labels is None else np.asarray(labels),
        point_radii=None if radii is None else np.asarray(radii, float),
    )


class TestPoints:
    def test_rounding_and_labels(self):
        source = _points_source([[10.5, 10.49, 9.5], [20.2, 19.7, 30.0]], labels=[1, 0])
        plan = plan_points([source], 8, class_names=("a", "b"))
        assert [(c.centre, c.label) for c in plan.crops] == [((11, 10, 10), 1), ((20, 20, 30), 0)]
        assert plan.class_names == ("a", "b")

    def test_negatives_shift_labels(self):
        source = _points_source([[10, 10, 10], [30, 30, 30]], labels=[0, 1])
        plan = plan_points([source], 8, negatives=2.0, class_names=("a", "b"))
        assert plan.class_names == ("background", "a", "b")
        labels = sorted(c.label for c in plan.crops)
        assert labels == [0, 0, 0, 0, 1, 2]
        assert len({c.key for c in plan.crops}) == 6
        assert _is_sorted(plan, ["p"])

    def test_negatives_keep_away_and_inside(self):
        rng = np.random.default_rng(1)
        points = rng.uniform(6, 54, size=(30, 3))
        radii = rng.uniform(1, 6, size=30)
        source = _points_source(points, radii=radii, shape=(60, 60, 60))
        crop = (8, 10, 12)
        plan = plan_points(
            [source], crop, negatives=3.0, class_names=("p",), min_distance=2.5, seed=3
        )
        negatives = np.array([c.centre for c in plan.crops if c.label == 0])
        assert len(negatives) == 90 and not plan.warnings
        distance = np.linalg.norm(negatives[:, None, :] - points[None], axis=-1)
        assert (distance >= radii[None] + 2.5).all()
        for centre in negatives:
            for (start, stop), n in zip(crop_box(centre, crop, 0), (60, 60, 60), strict=True):
                assert start >= 0 and stop <= n

    def test_negatives_reproducible_per_seed(self):
        source = _points_source(np.random.default_rng(0).uniform(5, 35, (10, 3)))
        first = plan_points([source], 8, negatives=1.0, class_names=("p",), seed=7)
        again = plan_points([source], 8, negatives=1.0, class_names=("p",), seed=7)
        other = plan_points([source], 8, negatives=1.0, class_names=("p",), seed=8)
        assert first == again
        assert first.crops != other.crops

    def test_negatives_independent_of_other_sources(self):
        a = _points_source([[10, 10, 10]], sid="a")
        b = _points_source([[20, 20, 20]], sid="b")
        alone = plan_points([a], 8, negatives=3.0, class_names=("p",))
        both = plan_points([b, a], 8, negatives=3.0, class_names=("p",))
        assert [c for c in both.crops if c.source == "a"] == list(alone.crops)

    def test_negatives_round_half_up(self):
        source = _points_source([[10, 10, 10], [30, 30, 30]])
        plan = plan_points([source], 8, negatives=0.25, class_names=("p",))
        assert sum(c.label == 0 for c in plan.crops) == 1  # round(0.5) -> 1

    def test_too_few_negatives_warns_and_keeps_what_it_found(self):
        source = _points_source([[10, 10, 10]], radii=[100.0], shape=(20, 20, 20))
        plan = plan_points([source], 4, negatives=5.0, class_names=("p",))
        assert len(plan) == 1
        assert len(plan.warnings) == 1 and "'p'" in plan.warnings[0]
        assert "0 of 5" in plan.warnings[0]

    def test_pad_lets_negatives_reach_the_border(self):
        source = _points_source([[2, 2, 2]], shape=(12, 12, 12))
        plan = plan_points([source], 10, negatives=40.0, class_names=("p",), pad=True)
        negatives = np.array([c.centre for c in plan.crops if c.label == 0])
        assert len(negatives) == 40
        assert negatives.min() < 5 or negatives.max() > 7

    def test_duplicate_centres_keep_first(self):
        source = _points_source([[10.2, 10, 10], [9.8, 10, 10], [20, 20, 20]], labels=[0, 1, 1])
        plan = plan_points([source], 8, class_names=("a", "b"))
        assert [(c.centre, c.label) for c in plan.crops] == [((10, 10, 10), 0), ((20, 20, 20), 1)]
        assert len(plan.warnings) == 1 and "point 1" in plan.warnings[0]

    def test_crop_too_large_names_point(self):
        source = _points_source([[20, 20, 20], [2, 20, 20]], sid="tomo")
        with pytest.raises(CropTooLarge, match=r"'tomo'.*point 1.*\(2, 20, 20\)"):
            plan_points([source], 8, class_names=("p",))
        plan = plan_points([source], 8, class_names=("p",), pad=True)
        assert len(plan) == 2

    @pytest.mark.parametrize("bad", [[-0.6, 5, 5], [5, 40.0, 5], [5, 5, 99]])
    def test_points_outside_named(self, bad):
        source = _points_source([[5, 5, 5], bad], sid="tomo")
        with pytest.raises(PointsOutsideVolume, match=r"'tomo'.*point 1.*\(40, 40, 40\)"):
            plan_points([source], 4, class_names=("p",), pad=True)

    def test_last_half_voxel_goes_to_last_voxel(self):
        source = _points_source([[39.7, -0.5, 0.2]])
        plan = plan_points([source], 4, class_names=("p",), pad=True)
        assert plan.crops[0].centre == (39, 0, 0)

    def test_point_label_out_of_range(self):
        source = _points_source([[5, 5, 5]], labels=[3], sid="tomo")
        with pytest.raises(BadLabels, match=r"'tomo'.*class 3"):
            plan_points([source], 4, class_names=("a", "b"), pad=True)

    def test_sources_without_points_give_no_crops(self):
        plan = plan_points(
            [PlanSource("empty", (8, 8, 8)), _points_source([[5, 5, 5]])],
            4,
            negatives=1.0,
            class_names=("p",),
        )
        assert {c.source for c in plan.crops} == {"p"}

    @pytest.mark.parametrize(
        "kwargs", [{"negatives": -1.0}, {"min_distance": -1.0}, {"seed": -1}, {"negatives": np.nan}]
    )
    def test_rejects_bad_arguments(self, kwargs):
        with pytest.raises(ValueError):
            plan_points([_points_source([[5, 5, 5]])], 4, class_names=("p",), **kwargs)

    @settings(max_examples=40, deadline=None)
    @given(
        points=st.lists(st.tuples(*[st.floats(-0.5, 29.99)] * 3), min_size=1, max_size=15),
        ratio=st.floats(0, 2),
        distance=st.floats(0, 3),
        seed=st.integers(0, 2**32),
    )
    def test_points_properties(self, points, ratio, distance, seed):
        source = _points_source(points, shape=(30, 30, 30))
        plan = plan_points(
            [source],
            6,
            negatives=ratio,
            class_names=("p",),
            pad=True,
            min_distance=distance,
            seed=seed,
        )
        keys = [c.key for c in plan.crops]
        assert len(keys) == len(set(keys))
        assert _is_sorted(plan, ["p"])
        pts = np.asarray(points, float)
        negatives = np.array(
            [c.centre for c in plan.crops if ratio > 0 and c.label == 0], dtype=np.int64
        ).reshape(-1, 3)
        if len(negatives):
            distance_to = np.linalg.norm(negatives[:, None] - pts[None], axis=-1)
            assert (distance_to >= distance).all()
        assert ((negatives >= 0) & (negatives < 30)).all()
        wanted = math.floor(ratio * len(points) + 0.5) if ratio > 0 else 0
        assert len(negatives) == wanted or plan.warnings


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 40)] * 3),
    reach=st.tuples(*[st.integers(0, 9)] * 3),
    region_max=st.integers(1, 70_000),
)
def test_region_tiles_partition_the_volume_with_distinct_keys_or_refuse(shape, reach, region_max):
    """Cores partition the volume, each stored box (core plus reach, within the volume) fits
    ``region_max``, keys are distinct; or a clear refusal naming region_max."""
    source = PlanSource("v", shape)
    try:
        plan = plan_regions(
            [source], itemsize=4, region_max=region_max, reach=reach, crops_per_region=1
        )
    except BadOption as e:
        assert str(e).startswith(f"region_max={region_max}: a volume of shape {shape}")
        return
    keys = [t.key for t in plan.tiles]
    assert len(set(keys)) == len(keys)
    covered = np.zeros(shape, np.int64)
    for t in plan.tiles:
        covered[tuple(slice(a, b) for a, b in zip(t.core_start, t.core_stop, strict=True))] += 1
        assert math.prod(t.shape) * 4 <= region_max
        for a, b, ca, cb, r, n in zip(
            t.start, t.stop, t.core_start, t.core_stop, reach, shape, strict=True
        ):
            assert (a, b) == (max(ca - r, 0), min(cb + r, n))
    assert (covered == 1).all()
