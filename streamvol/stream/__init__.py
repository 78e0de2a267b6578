"""Streaming loader: exact, deterministic, resumable epochs over WebDataset shards."""

from streamvol.core.rng import key_hash, sample_rng
from streamvol.stream.dataset import Prepare, StreamDataset, open_shards
from streamvol.stream.loader import StreamLoader, collate, loader
from streamvol.stream.prefetch import DevicePrefetcher

__all__ = [
    "DevicePrefetcher",
    "Prepare",
    "StreamDataset",
    "StreamLoader",
    "collate",
    "key_hash",
    "loader",
    "open_shards",
    "sample_rng",
]
