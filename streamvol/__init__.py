"""streamvol: a streaming data engine for deep learning on 3D bio-imaging volumes."""

__version__ = "0.1.0"
