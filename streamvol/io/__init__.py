"""Readers: the only place in streamvol that opens source formats.

Volumes open lazily as ``dask.array`` in (z, y, x) order; labels come back as plain numpy.
"""

from streamvol.io._discover import Dataset, SourceSpec, discover, load_points
from streamvol.io._labels import (
    ClassTable,
    Points,
    read_class_csv,
    read_copick_config,
    read_copick_picks,
    read_spot_table,
)
from streamvol.io._volume import Volume, natural_key, open_mask, open_volume, source_id

__all__ = [
    "ClassTable",
    "Dataset",
    "Points",
    "SourceSpec",
    "Volume",
    "discover",
    "load_points",
    "natural_key",
    "open_mask",
    "open_volume",
    "read_class_csv",
    "read_copick_config",
    "read_copick_picks",
    "read_spot_table",
    "source_id",
]
