"""Sharder: plan crops, split them, and write WebDataset tars with dask (see DESIGN.md).
Checking a written set is a reader's job: ``streamvol.stream.inspect.verify``."""

from streamvol.core.manifest import read_manifest
from streamvol.shard.config import ShardConfig, parse_config
from streamvol.shard.sharder import ShardResult, shard

__all__ = ["ShardConfig", "ShardResult", "parse_config", "read_manifest", "shard"]
