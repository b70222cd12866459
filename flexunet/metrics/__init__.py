"""Metrics: honest per-class counts-based metrics, and the seed's formulas for comparison."""
from flexunet.metrics.counts import (
    HONEST_METRICS,
    Counts,
    confusion_counts,
    confusion_matrix,
    dice,
    iou,
    nanmean,
    precision,
    recall,
)
from flexunet.metrics.seed import SEED_METRICS

__all__ = [
    "HONEST_METRICS", "SEED_METRICS", "Counts", "confusion_counts", "confusion_matrix", "dice", "iou", "nanmean",
    "precision", "recall",
]
