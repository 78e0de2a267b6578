"""Predict: sliding windows over whole volumes with blending and TTA; peaks per particle type ->
picks in Angstrom (copick JSON, CSV); label and probability volumes as OME-Zarr; and the CZII
score of picks against reference picks, or of label volumes against masks (Dice, IoU)."""

from streamvol.predict._peaks import METHODS, find_peaks
from streamvol.predict._run import (
    Peaks,
    Predictor,
    load_choices,
    predict_volumes,
    resolve_sources,
    split_sources,
)
from streamvol.predict._score import format_score, load_picks, particle_table, score_picks
from streamvol.predict._score_labels import (
    format_label_score,
    is_label_prediction,
    score_labels,
    volume_counts,
)
from streamvol.predict._window import (
    TTA_KINDS,
    Window,
    count_windows,
    importance_map,
    parse_tta,
    sliding_window,
    sliding_window_slabs,
    tta_transforms,
    window_starts,
)
from streamvol.predict._write import (
    OmeZarrWriter,
    copick_segmentation_path,
    picks_path,
    write_copick_config,
    write_copick_picks,
    write_copick_segmentation,
    write_ome_zarr,
    write_picks_csv,
)

__all__ = [
    "METHODS",
    "TTA_KINDS",
    "OmeZarrWriter",
    "Peaks",
    "Predictor",
    "Window",
    "copick_segmentation_path",
    "count_windows",
    "find_peaks",
    "format_label_score",
    "format_score",
    "importance_map",
    "is_label_prediction",
    "load_choices",
    "load_picks",
    "parse_tta",
    "particle_table",
    "picks_path",
    "predict_volumes",
    "resolve_sources",
    "score_labels",
    "score_picks",
    "sliding_window",
    "sliding_window_slabs",
    "split_sources",
    "tta_transforms",
    "volume_counts",
    "window_starts",
    "write_copick_config",
    "write_copick_picks",
    "write_copick_segmentation",
    "write_ome_zarr",
    "write_picks_csv",
]
