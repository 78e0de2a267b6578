"""Metrics and evaluation: classification (scikit-learn), threshold choice, segmentation,
CZII particle picking, plots and cross-validation summaries. Inputs are numpy arrays or
torch tensors (converted on the CPU); outputs are JSON-ready dicts."""

from streamvol.metrics.classification import classification_report, specificity_per_class
from streamvol.metrics.cv import format_table, summarise_folds
from streamvol.metrics.picking import (
    CZII_PARTICLES,
    ParticleType,
    best_threshold,
    fbeta_from_counts,
    match_points,
    particle_weight,
    picking_score,
    points_by_type,
)
from streamvol.metrics.plots import (
    plot_compare,
    plot_confusion_matrix,
    plot_cv_roc,
    plot_history,
    plot_picks,
    plot_pr,
    plot_reconstructions,
    plot_roc,
    plot_scores,
    plot_segmentations,
    plot_thresholds,
)
from streamvol.metrics.segmentation import confusion_counts, dice_iou, segmentation_report
from streamvol.metrics.threshold import sweep_threshold

__all__ = [
    "CZII_PARTICLES",
    "ParticleType",
    "best_threshold",
    "classification_report",
    "confusion_counts",
    "dice_iou",
    "fbeta_from_counts",
    "format_table",
    "match_points",
    "particle_weight",
    "picking_score",
    "plot_compare",
    "plot_confusion_matrix",
    "plot_cv_roc",
    "plot_history",
    "plot_picks",
    "plot_pr",
    "plot_reconstructions",
    "plot_roc",
    "plot_scores",
    "plot_segmentations",
    "plot_thresholds",
    "points_by_type",
    "segmentation_report",
    "specificity_per_class",
    "summarise_folds",
    "sweep_threshold",
]
