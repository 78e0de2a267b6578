"""Tests for streamvol.shard.split: grouped, stratified splits and folds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamvol.shard.plan import Crop, PlanSource, plan_grid
from streamvol.shard.split import (
    SplitWarning,
    fold_crops,
    group_of,
    parse_fractions,
    split_crops,
)


def _crops(sizes: list[int], labels: list[int] | None = None) -> list[Crop]:
    """Source i holds sizes[i] crops along x, all of class labels[i] (or -1)."""
    return [
        Crop(f"s{i}", (0, 0, j), -1 if labels is None else labels[i])
        for i, n in enumerate(sizes)
        for j in range(n)
    ]


def _partition(crops: list[Crop], parts: dict[str, list[Crop]]) -> None:
    keys = [c.key for part in parts.values() for c in part]
    assert sorted(keys) == sorted(c.key for c in crops)


def _groups_disjoint(parts: dict[str, list[Crop]], group: dict[str, str]) -> None:
    owner: dict[str, str] = {}
    for name, part in parts.items():
        for c in part:
            assert owner.setdefault(group[c.key], name) == name


class TestParseFractions:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0.8,0.1,0.1", (0.8, 0.1, 0.1)),
            ("8,1,1", (0.8, 0.1, 0.1)),
            ("1", (1.0,)),
            ("3, 1", (0.75, 0.25)),
            ("1,0,1", (0.5, 0.0, 0.5)),
        ],
    )
    def test_parses_and_normalises(self, text, expected):
        assert parse_fractions(text) == pytest.approx(expected)

    @pytest.mark.parametrize("text", ["", "a,b", "0,0", "-0.1,1", "1,1,1,1", "nan,1", "inf"])
    def test_rejects_and_names_text(self, text):
        with pytest.raises(ValueError, match=repr(text)):
            parse_fractions(text)


class TestSplit:
    def test_zero_fraction_omitted_and_string_accepted(self):
        crops = _crops([3] * 10)
        assert set(split_crops(crops, (0.8, 0.0, 0.2))) == {"train", "test"}
        assert set(split_crops(crops, "0.5,0.5")) == {"train", "val"}
        assert split_crops(crops, (1,)) == {"train": crops}

    def test_fractions_respected_with_many_equal_groups(self):
        crops = _crops([5] * 100)
        parts = split_crops(crops, (0.7, 0.2, 0.1), seed=3)
        assert [len(parts[n]) for n in ("train", "val", "test")] == [350, 100, 50]

    def test_stratified_on_many_groups(self):
        rng = np.random.default_rng(0)
        sizes = rng.integers(2, 20, size=120).tolist()
        labels = rng.choice(3, size=120, p=[0.6, 0.3, 0.1]).tolist()
        crops = _crops(sizes, labels)
        overall = np.bincount([c.label for c in crops], minlength=3) / len(crops)
        parts = split_crops(crops, seed=1)
        for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            part = parts[name]
            assert len(part) / len(crops) == pytest.approx(share, abs=0.02)
            mix = np.bincount([c.label for c in part], minlength=3) / len(part)
            assert np.abs(mix - overall).max() < 0.05

    def test_every_split_gets_a_group_even_when_one_is_huge(self):
        crops = _crops([100, 3, 2])
        parts = split_crops(crops)
        assert {n: {c.source for c in p} for n, p in parts.items()} == {
            "train": {"s0"},
            "val": {"s1"},
            "test": {"s2"},
        }

    def test_deterministic_and_input_order_independent(self):
        rng = np.random.default_rng(5)
        crops = _crops(rng.integers(1, 9, 40).tolist(), rng.integers(0, 4, 40).tolist())
        first = split_crops(crops, seed=11)
        assert split_crops(crops, seed=11) == first
        shuffled = [crops[i] for i in rng.permutation(len(crops))]
        again = split_crops(shuffled, seed=11)
        assert {n: sorted(c.key for c in p) for n, p in again.items()} == {
            n: sorted(c.key for c in p) for n, p in first.items()
        }
        other = split_crops(crops, seed=12)
        assert any({c.source for c in other[n]} != {c.source for c in first[n]} for n in first)

    def test_keeps_plan_order_within_splits(self):
        sources = [PlanSource(f"v{i}", (16, 16, 16), label=i % 2) for i in range(12)]
        plan = plan_grid(sources, 8)
        for part in split_crops(plan.crops).values():
            index = [plan.crops.index(c) for c in part]
            assert index == sorted(index)

    def test_too_few_groups(self):
        with pytest.raises(ValueError, match=r"3 splits.*only 2 groups.*at most 2"):
            split_crops(_crops([4, 4]))

    def test_given_groups_override(self):
        crops = _crops([2] * 6)
        groups = {c.key: "even" if int(c.source[1:]) % 2 == 0 else "odd" for c in crops}
        parts = split_crops(crops, (0.5, 0.5), groups=groups)
        assert {n: {groups[c.key] for c in p} for n, p in parts.items()} in (
            {"train": {"even"}, "val": {"odd"}},
            {"train": {"odd"}, "val": {"even"}},
        )
        with pytest.raises(ValueError, match="s0_z0_y0_x0"):
            split_crops(crops, (0.5, 0.5), groups={})

    def test_duplicate_keys_rejected(self):
        crops = _crops([2, 2, 2])
        with pytest.raises(ValueError, match="s0_z0_y0_x1"):
            split_crops([*crops, crops[1]])

    def test_no_crops(self):
        with pytest.raises(ValueError, match="none"):
            split_crops([])

    @settings(max_examples=50, deadline=None)
    @given(
        sizes=st.lists(st.integers(1, 12), min_size=3, max_size=25),
        n_classes=st.integers(0, 4),
        seed=st.integers(0, 1000),
        data=st.data(),
    )
    def test_grouped_partition(self, sizes, n_classes, seed, data):
        labels = (
            data.draw(
                st.lists(st.integers(0, n_classes - 1), min_size=len(sizes), max_size=len(sizes))
            )
            if n_classes
            else None
        )
        crops = _crops(sizes, labels)
        parts = split_crops(crops, seed=seed)
        _partition(crops, parts)
        _groups_disjoint(parts, {c.key: c.source for c in crops})
        assert all(parts[n] for n in ("train", "val", "test"))


class TestFolds:
    def test_names_sizes_and_partition(self):
        crops = _crops([4] * 24, [i % 2 for i in range(24)])
        folds = fold_crops(crops, 4, seed=2)
        assert list(folds) == ["fold0", "fold1", "fold2", "fold3"]
        assert [len(f) for f in folds.values()] == [24] * 4
        for fold in folds.values():
            assert sum(c.label for c in fold) == 12  # 3 groups of each class per fold
        _partition(crops, folds)
        _groups_disjoint(folds, {c.key: c.source for c in crops})

    def test_k_larger_than_groups(self):
        with pytest.raises(ValueError, match=r"5 folds.*only 3 groups"):
            fold_crops(_crops([2, 2, 2]), 5)

    @pytest.mark.parametrize("k", [1, 0, -2, True])
    def test_rejects_bad_k(self, k):
        with pytest.raises(ValueError, match="k"):
            fold_crops(_crops([2, 2, 2]), k)

    @settings(max_examples=40, deadline=None)
    @given(
        sizes=st.lists(st.integers(1, 10), min_size=2, max_size=20),
        k=st.integers(2, 6),
        seed=st.integers(0, 100),
    )
    def test_folds_partition(self, sizes, k, seed):
        crops = _crops(sizes, [i % 3 for i in range(len(sizes))])
        if k > len(sizes):
            with pytest.raises(ValueError, match="groups"):
                fold_crops(crops, k, seed=seed)
            return
        folds = fold_crops(crops, k, seed=seed)
        _partition(crops, folds)
        _groups_disjoint(folds, {c.key: c.source for c in crops})
        assert all(folds.values())


class TestSingleSource:
    def test_slabs_along_longest_extent(self):
        crops = plan_grid([PlanSource("tomo", (16, 200, 32))], 8).crops
        grouping = group_of(crops, 3)
        assert grouping.by == "slab" and "'tomo'" in grouping.warning
        assert len(set(grouping.groups.values())) == 12
        for c in crops:  # slabs cut y only: every crop with one y shares a slab
            same_y = {grouping.groups[d.key] for d in crops if d.centre[1] == c.centre[1]}
            assert same_y == {grouping.groups[c.key]}

    def test_split_warns_and_keeps_slabs_contiguous_and_disjoint(self):
        crops = plan_grid([PlanSource("tomo", (160, 16, 16))], 8).crops
        with pytest.warns(SplitWarning, match="slabs"):
            parts = split_crops(crops, seed=4)
        _partition(crops, parts)
        grouping = group_of(crops, 3)
        _groups_disjoint(parts, grouping.groups)
        spans = {}
        for slab in set(grouping.groups.values()):
            zs = sorted({c.centre[0] for c in crops if grouping.groups[c.key] == slab})
            spans[slab] = (zs[0], zs[-1])
        for a, b in ((a, b) for a in spans.values() for b in spans.values() if a != b):
            assert a[1] < b[0] or b[1] < a[0]  # slabs do not interleave

    def test_folds_on_one_source(self):
        crops = plan_grid([PlanSource("tomo", (16, 16, 400))], 8).crops
        with pytest.warns(SplitWarning):
            folds = fold_crops(crops, 5)
        assert [len(f) for f in folds.values()] == [40] * 5

    def test_one_split_needs_no_slabs(self):
        crops = plan_grid([PlanSource("tomo", (16, 16, 16))], 8).crops
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert split_crops(crops, (1.0,)) == {"train": list(crops)}

    def test_too_few_slabs(self):
        crops = [Crop("tomo", (5, 5, 5)), Crop("tomo", (5, 5, 6))]
        with pytest.raises(ValueError, match="2 groups"), pytest.warns(SplitWarning):
            split_crops(crops)

    def test_given_groups_win_over_slabs(self):
        crops = plan_grid([PlanSource("tomo", (16, 16, 64))], 8).crops
        groups = {c.key: f"g{c.centre[2]}" for c in crops}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parts = split_crops(crops, groups=groups)
        _groups_disjoint(parts, groups)
