"""The plots of a run say what they show: the run, the split and its size, class names."""

from __future__ import annotations

import pytest

from streamvol.train import TrainConfig, Trainer, evaluate


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
