"""Sharder: plan crops, split them, and write WebDataset tars with dask (see DESIGN.md)."""

from streamvol.shard.config import ShardConfig, parse_config
from streamvol.shard.manifest import read_manifest, verify
from streamvol.shard.sharder import ShardResult, shard

__all__ = ["ShardConfig", "ShardResult", "parse_config", "read_manifest", "shard", "verify"]
