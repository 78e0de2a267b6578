"""streamvol: a streaming data engine for deep learning on 3D bio-imaging volumes."""

from __future__ import annotations

from streamvol.core.lazy import lazy_names

__version__ = "0.1.0"
__all__ = ["__version__", "loader", "open_shards"]

# torch loads only when the loader is asked for: `import streamvol` and the CLI stay fast.
__getattr__ = lazy_names(__name__, dict.fromkeys(("open_shards", "loader"), "streamvol.stream"))
