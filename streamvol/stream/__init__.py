"""Streaming loader: exact, deterministic, resumable epochs over WebDataset shards."""

from streamvol.core.rng import key_hash, sample_rng
from streamvol.stream.dataset import StreamDataset, open_shards
from streamvol.stream.loader import StreamLoader, collate, loader
from streamvol.stream.prefetch import DevicePrefetcher
from streamvol.stream.prepare import AugmentOnCPU, CentreCrop, ForDevice, Normalize, Prepare

__all__ = [
    "AugmentOnCPU",
    "CentreCrop",
    "DevicePrefetcher",
    "ForDevice",
    "Normalize",
    "Prepare",
    "StreamDataset",
    "StreamLoader",
    "collate",
    "key_hash",
    "loader",
    "open_shards",
    "sample_rng",
]
