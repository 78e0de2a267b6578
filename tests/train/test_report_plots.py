"""The plots of a run say what they show: the run, the split and its size, class names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamvol.train import TrainConfig, Trainer, evaluate
from streamvol.train.evaluation import spread_by_rank


@pytest.fixture
def figures(monkeypatch):
    from streamvol.metrics import plots

    saved = {}
    real = plots.save_figure

    def keep(fig, path, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return real(fig, path, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


def _texts(fig) -> str:
    titles = [fig._suptitle.get_text() if fig._suptitle else ""]
    titles += [ax.get_title() for ax in fig.axes]
    return " | ".join(titles)


def test_report_plots_name_the_run_split_and_classes(blob_shards, tmp_path, figures):
    config = TrainConfig(
        shards=str(blob_shards), model="simple_cnn", epochs=2, batch_size=8, workers=0,
        augment="flips",
    )  # fmt: skip
    Trainer(config, tmp_path / "blobs").fit()
    assert "blobs: training and validation by epoch" in _texts(figures["curves.png"])
    assert "ROC: blobs, val split (12 samples)" in _texts(figures["val_roc.png"])
    evaluate(tmp_path / "blobs", split="test", tta=True)
    text = _texts(figures["test_tta_confusion.png"])
    assert "confusion matrix: blobs, test split with 8-flip TTA (12 samples)" in text
    axis = figures["test_tta_confusion.png"].axes[0]
    assert {t.get_text() for t in axis.get_yticklabels()} == {"blob", "flat"}
    assert "precision-recall: blobs, test split" in _texts(figures["test_tta_pr.png"])


def test_segmentation_reports_draw_the_worst_to_the_best_crops(tmp_path, figures):
    from streamvol import synth
    from streamvol.shard import parse_config, shard

    data = synth.make("nuclei", tmp_path / "nuclei", n=6, size=(8, 32, 32), seed=4)
    shards = tmp_path / "shards"
    shard(parse_config([data], plan="grid", crop="8,16,16", context=0, split="0.5,0.5"), shards)
    config = TrainConfig(
        shards=str(shards), model="unet3d", model_options={"depth": 2, "base_width": 4},
        epochs=2, batch_size=8, workers=0, augment="flips", lr=1e-2, warmup=0,
    )  # fmt: skip
    report = Trainer(config, tmp_path / "seg").fit()
    assert report["plots"]["segmentations"] == str(tmp_path / "seg" / "val_segmentations.png")
    fig = figures["val_segmentations.png"]
    title = "seg, val split (12 samples)\nworst to best Dice, each the z slice with the most"
    assert title in _texts(fig)
    assert len(fig.axes) == 6 * 3  # 6 of the 12 crops: image, truth, prediction
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "truth", "prediction"]
    labels = [ax.get_ylabel().removeprefix("Dice ").split(", z ") for ax in fig.axes[::3]]
    shown = [float(dice) for dice, _ in labels]
    assert all(0 <= int(z) < 8 for _, z in labels)
    dice = [row[1] for row in report["per_sample_dice"]]  # the foreground's
    assert max(dice) - min(dice) > 0.1  # crops that differ, so the order shows
    assert shown == sorted(shown)
    assert shown[0] == pytest.approx(min(dice), abs=5e-4)
    assert shown[-1] == pytest.approx(max(dice), abs=5e-4)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["foreground"]


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.integers(1, 8))
def test_spread_by_rank_runs_from_the_lowest_to_the_highest(values, n):
    rows = spread_by_rank(values, n)
    assert len(rows) == min(n, len(values)) == len(set(rows.tolist()))
    picked = [values[i] for i in rows]
    assert picked == sorted(picked)
    assert picked[0] == min(values)
    if n > 1:
        assert picked[-1] == max(values)
