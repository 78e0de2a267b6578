"""streamvol: a streaming data engine for deep learning on 3D bio-imaging volumes."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "loader", "open_shards"]


def __getattr__(name: str) -> Any:
    # torch loads only when the loader is asked for: `import streamvol` and the CLI stay fast.
    if name in ("open_shards", "loader"):
        from streamvol import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'streamvol' has no attribute {name!r}")
