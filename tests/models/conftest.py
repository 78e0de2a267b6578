"""Fixtures for the model tests: seeded torch."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # Tests only: library code never seeds torch.
    torch.manual_seed(0)
