"""Metrics and evaluation: classification (scikit-learn), threshold choice, segmentation,
CZII particle picking, plots and cross-validation summaries. Inputs are numpy arrays or
torch tensors (converted on the CPU); outputs are JSON-ready dicts.

The names below load on first use (PEP 562): a submodule (``streamvol.metrics.picking``, which
``predict`` reads) imports without scikit-learn and matplotlib.
"""

from __future__ import annotations

from streamvol.core.lazy import lazy_names

_WHERE = {
    "CZII_PARTICLES": "streamvol.metrics.picking",
    "ParticleType": "streamvol.metrics.picking",
    "best_threshold": "streamvol.metrics.picking",
    "classification_report": "streamvol.metrics.classification",
    "confusion_counts": "streamvol.metrics.segmentation",
    "dice_iou": "streamvol.metrics.segmentation",
    "fbeta_from_counts": "streamvol.metrics.picking",
    "format_table": "streamvol.metrics.cv",
    "match_points": "streamvol.metrics.picking",
    "particle_weight": "streamvol.metrics.picking",
    "picking_score": "streamvol.metrics.picking",
    "plot_compare": "streamvol.metrics.plots",
    "plot_confusion_matrix": "streamvol.metrics.plots",
    "plot_cv_roc": "streamvol.metrics.plots",
    "plot_history": "streamvol.metrics.plots",
    "plot_picks": "streamvol.metrics.plots",
    "plot_pr": "streamvol.metrics.plots",
    "plot_reconstructions": "streamvol.metrics.plots",
    "plot_roc": "streamvol.metrics.plots",
    "plot_scores": "streamvol.metrics.plots",
    "plot_segmentations": "streamvol.metrics.plots",
    "plot_thresholds": "streamvol.metrics.plots",
    "points_by_type": "streamvol.metrics.picking",
    "segmentation_report": "streamvol.metrics.segmentation",
    "specificity_per_class": "streamvol.metrics.classification",
    "summarise_folds": "streamvol.metrics.cv",
    "sweep_threshold": "streamvol.metrics.threshold",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
