"""inspect --preview: each crop titled with its split and class, a legend for the crop box, the
mask outline and the points, and a title that says what the montage shows."""

from __future__ import annotations

import json

import pytest

from streamvol import synth
from streamvol.shard import parse_config, shard
from streamvol.stream.inspect import preview


@pytest.fixture
def figures(monkeypatch):
    from streamvol.core import files as plots

    saved = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, p, **k: saved.append(fig) or real(fig, p))
    return saved


def _legend(fig) -> set[str]:
    (legend,) = fig.legends
    return {t.get_text() for t in legend.get_texts()}


def test_nuclei_preview_titles_and_legend(tmp_path, figures):
    data = synth.make("nuclei", tmp_path / "nuclei", n=6, size=16)
    config = parse_config([data], plan="sample", crop=12, context=2, split="0.5,0.5")
    shard(config, tmp_path / "set")
    preview(tmp_path / "set", tmp_path / "p.png", n=4)
    fig = figures[-1]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    for title in titles:
        head = title.split("\n")[0]
        split, name = head.split(": ")
        assert split in ("train", "val") and name in synth.CLASSES
    assert _legend(fig) == {"crop (outside: stored margin)", "mask outline"}
    assert fig._suptitle.get_text().startswith("set: 4 classification crops of train, val")


def test_spot_preview_shows_points_in_the_legend(tmp_path, figures):
    data = synth.make("spots", tmp_path / "spots", n=24)
    shard(parse_config([data], plan="points", crop="9,11,11", context=0, split="1"), tmp_path / "s")
    preview(tmp_path / "s", tmp_path / "p.png", n=4)
    fig = figures[-1]
    assert "points within 3 slices" in _legend(fig)
    heads = {ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_title()}
    assert heads <= {"train: true", "train: false"} and len(heads) == 2


def test_a_region_preview_shows_every_class_and_split(tmp_path, figures):
    """Drawn crops of a region set: the first pick of each class in each region and a negative
    (class background), round-robin over each class's splits: a small montage shows them all."""
    data = synth.make("tomograms", tmp_path / "t", n=3, size=(40, 80, 80))
    config = parse_config([data], plan="regions", crop=8, split="0.34,0.33,0.33", negatives=1)
    shard(config, tmp_path / "set")
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    expected = {
        f"{split}: {name}" for split, counts in manifest["class_counts"].items() for name in counts
    }

    def heads(n: int) -> list[str]:
        preview(tmp_path / "set", tmp_path / "p.png", n=n)
        return [ax.get_title().split("\n")[0] for ax in figures[-1].axes if ax.get_title()]

    assert sorted(heads(24)) == sorted(expected)
    first = manifest["class_names"][0]  # every split holds one here
    assert heads(3) == [f"{split}: {first}" for split in ("train", "val", "test")]


def test_the_augmentation_preview_shows_the_mask_crop_nearest_half_foreground(tmp_path, figures):
    """Three crops: one voxel of foreground, half, all; the preview draws the half one, whose
    outline the draws turn (the first labelled crop would show next to none)."""
    import numpy as np

    from streamvol.stream.inspect import preview_augmented

    image = np.random.default_rng(0).normal(size=(8, 8, 24)).astype(np.float32)
    mask = np.zeros((8, 8, 24), np.uint8)
    mask[0, 0, 0] = 1
    mask[:, :4, 8:16] = 1
    mask[:, :, 16:] = 1
    np.save(tmp_path / "v.npy", image)
    np.save(tmp_path / "v_mask.npy", mask)
    config = parse_config([tmp_path / "v.npy"], plan="grid", crop=8, context=0, split="1")
    shard(config, tmp_path / "set")
    preview_augmented(tmp_path / "set", tmp_path / "p.png", "flips")
    assert figures[-1]._suptitle.get_text().startswith("v_z4_y4_x12 under 8 draws")
