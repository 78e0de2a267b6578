"""Plots write real PNG files and leave no figure open."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from streamvol.errors import ShapeMismatch
from streamvol.metrics import (
    classification_report,
    plot_confusion_matrix,
    plot_cv_roc,
    plot_history,
    plot_pr,
    plot_roc,
    plot_scores,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000  # axes, text and curves, not an empty canvas
    assert not path.with_name(path.name + ".partial").exists()


def binary(seed: int, n: int = 80):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)


def multiclass(seed: int, n: int = 90, c: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n) + np.eye(c)[y]
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def no_figure_left_open():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def test_history(tmp_path: Path):
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_auc": 1 - 0.5 / e, "lr": 1e-3}
        for e in range(1, 6)
    ]
    history[2].pop("val_auc")  # a metric missing in one epoch is drawn through the others
    history[1]["per_class"] = {"a": 0.5}  # nested values are ignored
    out = plot_history(history, tmp_path / "runs" / "curves.png")
    assert out == tmp_path / "runs" / "curves.png"
    assert_png(out)
    assert_png(plot_history(history, tmp_path / "m.png", metrics=["val_auc"], title="run"))
    with pytest.raises(ValueError, match="appear in no epoch"):
        plot_history(history, tmp_path / "x.png", metrics=["f1"])


@pytest.mark.parametrize("plot", [plot_roc, plot_pr])
def test_roc_and_pr(tmp_path: Path, plot):
    y, s = binary(0)
    assert_png(plot(y, s, tmp_path / "binary.png", class_names=["neg", "pos"]))
    y, p = multiclass(1)
    w = (np.arange(len(y)) % 7 != 0).astype(float)
    assert_png(plot(y, p, tmp_path / "multi.png", class_names=["a", "b", "c"], weights=w))
    keep = y != 1  # class b absent: drawn as undefined, no crash
    assert_png(plot(y[keep], p[keep], tmp_path / "absent.png", class_names=["a", "b", "c"]))


def test_confusion_matrix(tmp_path: Path):
    y, p = multiclass(2)
    report = classification_report(y, p, class_names=["a", "b", "c"])
    out = plot_confusion_matrix(report["confusion_matrix"], tmp_path / "cm.png", class_names="abc")
    assert_png(out)
    with pytest.raises(ShapeMismatch):
        plot_confusion_matrix(np.eye(2), tmp_path / "bad.png", class_names="abc")


def test_cv_roc(tmp_path: Path):
    folds = [binary(k) for k in range(4)]
    out = plot_cv_roc(
        [f[0] for f in folds],
        [f[1] for f in folds],
        tmp_path / "cv.png",
        class_names=["neg", "pos"],
    )
    assert_png(out)
    folds = [multiclass(k) for k in range(3)]
    out = plot_cv_roc(
        [f[0] for f in folds],
        [f[1] for f in folds],
        tmp_path / "cv3.png",
        class_names=["a", "b", "c"],
    )
    assert_png(out)
    with pytest.raises(ShapeMismatch):
        plot_cv_roc([folds[0][0]], [], tmp_path / "bad.png", class_names="abc")


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot saves, to read its titles, labels and ticks (the PNG is written)."""
    from streamvol.metrics import plots

    saved = []
    real = plots.save_figure

    def keep(fig, path, **kwargs):
        saved.append(fig)
        return real(fig, path, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


def _texts(fig) -> list[str]:
    suptitle = fig._suptitle.get_text() if fig._suptitle else ""
    return [suptitle, *[ax.get_title() for ax in fig.axes]]


def test_metrics_of_some_epochs_draw_one_line_through_them(tmp_path: Path, figures):
    """Validation every other epoch (``--val-every 2``): each curve joins the epochs that hold
    it, not isolated points between gaps."""
    history = [{"epoch": e, "train_loss": 1 / e} for e in range(1, 6)]
    for row in history[1::2] + history[-1:]:
        row.update(val_loss=0.5 / row["epoch"], val_dice=row["epoch"] / 10)
    plot_history(history, tmp_path / "h.png")
    lines = {line.get_label(): line for ax in figures[-1].axes for line in ax.get_lines()}
    assert list(lines["val_dice"].get_xdata()) == [2, 4, 5]
    assert list(lines["val_dice"].get_ydata()) == [0.2, 0.4, 0.5]
    assert list(lines["train_loss"].get_xdata()) == [1, 2, 3, 4, 5]


def test_titles_say_what_and_epochs_are_whole(tmp_path: Path, figures):
    history = [{"epoch": e, "train_loss": 1 / e, "val_accuracy": e / 10} for e in (1, 2, 3)]
    plot_history(history, tmp_path / "h.png", title="spots: training and validation by epoch")
    fig = figures[-1]
    assert "spots: training and validation by epoch" in _texts(fig)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    y, s = binary(0)
    plot_roc(y, s, tmp_path / "r.png", class_names=["false", "true"], title="ROC: spots, test")
    assert "ROC: spots, test" in _texts(figures[-1])
    plot_confusion_matrix(
        [[3, 1], [0, 4]], tmp_path / "c.png", class_names=["false", "true"], title="cm: test"
    )
    fig = figures[-1]
    assert "cm: test" in _texts(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["false", "true"]


def test_compare_and_reconstruction_plots_are_pngs(tmp_path):
    import numpy as np

    from streamvol.metrics import plot_compare, plot_reconstructions

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    runs = [
        {"label": "cnn", "y_true": y, "scores": rng.uniform(size=40), "class_names": ["a", "b"]},
        {"label": "se", "y_true": y, "scores": 0.5 * y + 0.5 * rng.uniform(size=40),
         "class_names": ["a", "b"]},
        {"label": "three", "y_true": rng.integers(0, 3, 40),
         "scores": rng.dirichlet(np.ones(3), 40), "class_names": ["a", "b", "c"]},
    ]  # fmt: skip
    path = plot_compare(runs, tmp_path / "c.png", title="test")
    assert path.read_bytes()[:4] == b"\x89PNG"
    x = rng.normal(size=(3, 1, 5, 8, 8))
    path = plot_reconstructions(x, x * 0.5, x, tmp_path / "r.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_segmentation_plot_is_a_png_and_refuses_mismatched_slices(tmp_path):
    from streamvol.metrics import plot_segmentations

    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 12, 10))
    truth = rng.integers(0, 3, (3, 12, 10))
    names = ["background", "cell", "nucleus"]
    path = plot_segmentations(images, truth, truth, tmp_path / "s.png", dice=[1, 1, 1],
                              class_names=names)  # fmt: skip
    assert_png(path)
    with pytest.raises(
        ShapeMismatch, match=r"predictions: expected the images' shape \(3, 12, 10\)"
    ):
        plot_segmentations(images, truth, truth[:, :6], tmp_path / "x.png", dice=[1, 1, 1],
                           class_names=names)  # fmt: skip
    with pytest.raises(ShapeMismatch, match="dice: expected 3 values"):
        plot_segmentations(images, truth, truth, tmp_path / "x.png", dice=[1], class_names=names)
    assert not (tmp_path / "x.png").exists()


def test_score_bars_are_the_values_and_say_na_where_undefined(tmp_path: Path, figures):
    from streamvol.errors import BadInput

    scores = {
        "ribosome": {"precision": 0.5, "recall": 0.25, "F-beta": 0.26},
        "virus": {"precision": None, "recall": 0.0, "F-beta": float("nan")},
    }
    out = plot_scores(scores, tmp_path / "s.png", ylabel="score", title="picks",
                      notes={"ribosome": "TP 1 FP 1 FN 3"})  # fmt: skip
    assert_png(out)
    ax = figures[-1].axes[0]
    # bars series by series: precision of both types, then recall, then F-beta
    assert [p.get_height() for p in ax.patches] == [0.5, 0.0, 0.25, 0.0, 0.26, 0.0]
    assert [t.get_text() for t in ax.texts] == ["0.500", "n/a", "0.250", "0.000", "0.260", "n/a"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ribosome\nTP 1 FP 1 FN 3", "virus"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["precision", "recall", "F-beta"]
    with pytest.raises(BadInput, match="at least one group"):
        plot_scores({}, tmp_path / "none.png", ylabel="score", title="none")
