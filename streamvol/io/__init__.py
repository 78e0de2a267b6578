"""Readers: the only place in streamvol that opens source formats.

Volumes open lazily as ``dask.array`` in (z, y, x) order; labels come back as plain numpy.
"""

from streamvol.io._discover import (
    COPICK_CONFIG,
    Dataset,
    SourceSpec,
    copick_config,
    copick_picks,
    copick_project,
    discover,
    is_multilabel,
    load_points,
)
from streamvol.io._labels import (
    PICK_COLUMNS,
    ClassTable,
    Points,
    read_class_csv,
    read_copick_config,
    read_copick_labels,
    read_copick_picks,
    read_copick_weights,
    read_picks_table,
    read_spot_table,
)
from streamvol.io._volume import Volume, natural_key, open_mask, open_volume, source_id

__all__ = [
    "COPICK_CONFIG",
    "PICK_COLUMNS",
    "ClassTable",
    "Dataset",
    "Points",
    "SourceSpec",
    "Volume",
    "copick_config",
    "copick_picks",
    "copick_project",
    "discover",
    "is_multilabel",
    "load_points",
    "natural_key",
    "open_mask",
    "open_volume",
    "read_class_csv",
    "read_copick_config",
    "read_copick_labels",
    "read_copick_picks",
    "read_copick_weights",
    "read_picks_table",
    "read_spot_table",
    "source_id",
]
