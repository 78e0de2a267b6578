"""preview_augment writes a PNG of one stored sample under several draws."""

from __future__ import annotations

import numpy as np

from streamvol.augment import Augment, preview_augment

from .conftest import block, stored_for


def test_preview_writes_a_png(tmp_path):
    spec = Augment.preset("cryoet")
    stored = stored_for(spec, 12)
    image = block(stored, np.uint8)
    centre = (np.array(stored) - 1) / 2
    sample = {
        "__key__": "tomo_z10_y20_x30",
        "image.npy": image,
        "mask.npy": (image > 120).astype(np.uint8),
        "points.npy": np.array([[*centre, 1.0]], np.float32),
        "json": {"crop": [12, 12, 12]},
    }
    path = preview_augment(sample, spec, tmp_path / "preview.png", draws=3, seed=1)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert not (tmp_path / "preview.png.partial").exists()


def test_labels_are_words_and_the_legend_names_what_is_drawn(tmp_path, monkeypatch):
    from streamvol.core import files as plots

    saved = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, p, **k: saved.append(fig) or real(fig, p))
    spec = Augment.preset("default")
    stored = stored_for(spec, 12)
    image = block(stored, np.uint8)
    centre = (np.array(stored) - 1) / 2
    sample = {
        "__key__": "tomo_z10_y20_x30",
        "image.npy": image,
        "mask.npy": (image > 120).astype(np.uint8),
        "points.npy": np.array([[*centre, 1.0]], np.float32),
        "json": {"crop": [12, 12, 12]},
    }
    preview_augment(sample, spec, tmp_path / "p.png", draws=8, seed=1)
    fig = saved[-1]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("stored centre crop")
    words = " ".join(titles[1:])
    assert any(w in words for w in ("gamma ", "contrast ", "noise ", "zoom "))
    assert not any(t.split("\n")[-1].startswith(("g1", "c0", "n0")) for t in titles)
    (legend,) = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == {
        "mask outline",
        "points within 2 slices (colour: class)",
    }
    assert "under 8 draws" in fig._suptitle.get_text()


def test_describe_params_in_words():
    from streamvol.augment import describe_params
    from streamvol.augment._params import AugmentParams

    eye = np.eye(4)
    shape = (4, 4, 4)
    params = AugmentParams(eye, eye, shape, shape, gamma=1.22, contrast=0.87, noise_std=0.05)
    assert describe_params(params) == "gamma 1.22, contrast 0.87, noise 0.05"
    assert describe_params(AugmentParams(eye, eye, (4, 4, 4), (4, 4, 4))) == "geometry only"
