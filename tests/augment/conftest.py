"""Shared helpers for the augmentation tests: small blocks, keyed generators, spec builders."""

from __future__ import annotations

import numpy as np
import pytest

from streamvol.augment import Augment


def rng_for(seed: int, epoch: int = 0, key: int = 0) -> np.random.Generator:
    """A generator keyed the way the loader keys one (seed, epoch, key hash)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, key]))


def block(shape: tuple[int, int, int], dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    """A smooth-ish random block in [0, 200) of ``dtype`` (smooth so trilinear is tame)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.random(shape), 1.0)
    raw = (raw - raw.min()) / (raw.max() - raw.min() + 1e-12) * 199.0
    return raw.astype(dtype)


def stored_for(spec: Augment, crop: int) -> tuple[int, int, int]:
    """The stored block shape a crop of side ``crop`` gets with the spec's auto margin."""
    return tuple(crop + 2 * m for m in spec.margin(crop))  # type: ignore[return-value]


@pytest.fixture
def everything() -> Augment:
    """A spec that draws every per-sample step (for agreement and contract tests)."""
    return Augment.from_dict(
        {
            "preset": "default",
            "rotate": {"p": 1.0},
            "gamma": {"p": 0.7},
            "contrast": {"p": 0.7},
            "brightness": {"range": [-0.2, 0.2], "p": 0.7},
            "noise": {"std": [0.05, 0.2], "p": 0.7},
            "blur": {"sigma": [0.4, 1.0], "p": 0.4},
            "elastic": {"magnitude": 1.5, "grid": 3, "p": 0.5},
        }
    )
