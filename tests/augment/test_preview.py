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
