"""The seed's Keras metrics, same formulas, on probabilities. Kept for comparison with old runs.

They are batch-global and soft. `dice_coef_multiclass` counts background, so it reads 0.97-0.998 whatever the
model does on small objects; reports label it as the seed's metric and show per-class Dice beside it.
y_true: one-hot or 0/1 targets (N, C, H, W); y_pred: probabilities of the same shape.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

SeedMetric = Callable[[Tensor, Tensor], Tensor]
_EPS = 1e-7


def dice_coef(y_true: Tensor, y_pred: Tensor, smooth: float = 1.0) -> Tensor:
    """(2 sum(t*p) + 1) / (sum t + sum p + 1) over the whole batch."""
    t, p = y_true.float().flatten(), y_pred.float().flatten()
    return (2 * (t * p).sum() + smooth) / (t.sum() + p.sum() + smooth)


def iou_coef(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """sum(t*p) / sum(t + p - t*p) over the whole batch. (The seed gave NaN when both were empty; here 1.)"""
    t, p = y_true.float().flatten(), y_pred.float().flatten()
    inter = (t * p).sum()
    return (inter + _EPS) / ((t + p - t * p).sum() + _EPS)


def dice_coef_multiclass(y_true: Tensor, y_pred: Tensor, smooth: float = 1.0) -> Tensor:
    """Per sample, sums over H, W and classes (background included), then the batch mean: soft pixel accuracy."""
    t, p = y_true.float().flatten(1), y_pred.float().flatten(1)
    per_sample = (2 * (t * p).sum(1) + smooth) / (t.sum(1) + p.sum(1) + smooth)
    return per_sample.mean()


def binary_accuracy(y_true: Tensor, y_pred: Tensor, threshold: float = 0.5) -> Tensor:
    """Fraction of entries where (p > 0.5) equals t, over every channel (Keras binary_accuracy)."""
    return ((y_pred > threshold).float() == y_true.float()).float().mean()


def sensitivity(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """sum(round(t*p)) / (sum(round(t)) + eps): recall at a 0.5 threshold."""
    t, p = y_true.float().clamp(0, 1), y_pred.float().clamp(0, 1)
    return (t * p).round().sum() / (t.round().sum() + _EPS)


def specificity(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """sum(round((1-t)(1-p))) / (sum(round(1-t)) + eps)."""
    t, p = y_true.float().clamp(0, 1), y_pred.float().clamp(0, 1)
    return ((1 - t) * (1 - p)).round().sum() / ((1 - t).round().sum() + _EPS)


SEED_METRICS: dict[str, SeedMetric] = {
    "dice_coef": dice_coef,
    "iou_coef": iou_coef,
    "jacard_similarity": iou_coef,
    "dice_coef_multiclass": dice_coef_multiclass,
    "binary_accuracy": binary_accuracy,
    "accuracy": binary_accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
}
