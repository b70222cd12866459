"""Object-level metrics: cells and lesions counted and matched one by one, beside pixel Dice.

A true object and a predicted one match when their IoU is at least 0.5; above 0.5 each object can match at most one
other, so the matching is unique (pairs at exactly 0.5 are taken in order of IoU). From the matches: detection
precision, recall and F1, and panoptic quality PQ = SQ x RQ (Kirillov et al. 2019): SQ the mean IoU of the matches,
RQ = TP / (TP + FP/2 + FN/2), which equals F1. Objects are 8-connected components of each class, or the instances
the caller gives (e.g. watershed-separated predictions).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.measure import label as connected_components

from flexunet.metrics.bootstrap import Interval, percentile_interval, resample_weights

IOU_MATCH = 0.5


@dataclass(frozen=True)
class ObjectCounts:
    """Matching results, each (N, K) per image and class, or (K,) summed: matched pairs (tp), unmatched predictions
    (fp), unmatched true objects (fn), and the sum of the matched pairs' IoU."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @property
    def true(self) -> np.ndarray:
        """Number of true objects."""
        return self.tp + self.fn

    @property
    def predicted(self) -> np.ndarray:
        return self.tp + self.fp

    def total(self) -> ObjectCounts:
        """Summed over images: (K,)."""
        return ObjectCounts(*(getattr(self, f).sum(0) for f in ("tp", "fp", "fn", "iou")))

    @staticmethod
    def stack(rows: list[ObjectCounts]) -> ObjectCounts:
        """(N, K) from one (K,) row per image."""
        if not rows:
            return ObjectCounts(*(np.zeros((0, 0)) for _ in range(4)))
        return ObjectCounts(*(np.stack([getattr(r, f) for r in rows]).astype(np.float64)
                              for f in ("tp", "fp", "fn", "iou")))


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (no object in truth or prediction: the metric is undefined, not perfect)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def object_precision(c: ObjectCounts) -> np.ndarray:
    return _divide(c.tp, c.tp + c.fp)


def object_recall(c: ObjectCounts) -> np.ndarray:
    return _divide(c.tp, c.tp + c.fn)


def object_f1(c: ObjectCounts) -> np.ndarray:
    """2TP / (2TP + FP + FN); the recognition quality RQ of panoptic quality is the same number."""
    return _divide(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def segmentation_quality(c: ObjectCounts) -> np.ndarray:
    """SQ: mean IoU of the matched pairs."""
    return _divide(c.iou, c.tp)


def panoptic_quality(c: ObjectCounts) -> np.ndarray:
    """PQ = SQ x RQ = sum of matched IoU / (TP + FP/2 + FN/2)."""
    return _divide(c.iou, c.tp + 0.5 * c.fp + 0.5 * c.fn)


def count_ratio(c: ObjectCounts) -> np.ndarray:
    """Predicted objects / true objects (1 = the count is right on the whole; > 1 over-counts)."""
    return _divide(c.predicted, c.true)


def count_error(c: ObjectCounts) -> np.ndarray:
    """|predicted - true| objects, per image and class."""
    return np.abs(c.predicted - c.true).astype(np.float64)


OBJECT_METRICS: dict[str, Callable[[ObjectCounts], np.ndarray]] = {
    "object_precision": object_precision, "object_recall": object_recall, "object_f1": object_f1,
    "sq": segmentation_quality, "pq": panoptic_quality, "count_ratio": count_ratio,
}


def match_objects(truth: np.ndarray, pred: np.ndarray, threshold: float = IOU_MATCH) -> tuple[int, int, int, float]:
    """(tp, fp, fn, sum of matched IoU) between two instance maps (H, W) (0 = background, any other value = one
    object). Pairs with IoU >= threshold are matched greedily by decreasing IoU, each object at most once."""
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    t_fg = t_ids != 0
    p_fg = p_ids != 0
    # index 0 is background when present; shift so objects are 1..n in both
    t_idx = t_inv.reshape(-1) + (0 if t_ids[0] == 0 else 1)
    p_idx = p_inv.reshape(-1) + (0 if p_ids[0] == 0 else 1)
    n_true, n_pred = int(t_fg.sum()), int(p_fg.sum())
    if n_true == 0 or n_pred == 0:
        return 0, n_pred, n_true, 0.0
    t_area = np.bincount(t_idx, minlength=n_true + 1)
    p_area = np.bincount(p_idx, minlength=n_pred + 1)
    both = (t_idx > 0) & (p_idx > 0)
    pairs, inter = np.unique(t_idx[both].astype(np.int64) * (n_pred + 1) + p_idx[both], return_counts=True)
    ti, pi = pairs // (n_pred + 1), pairs % (n_pred + 1)
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    keep = iou >= threshold
    ti, pi, iou = ti[keep], pi[keep], iou[keep]
    used_t, used_p = set(), set()
    tp, total = 0, 0.0
    for k in np.argsort(-iou, kind="stable"):
        if ti[k] in used_t or pi[k] in used_p:
            continue
        used_t.add(ti[k])
        used_p.add(pi[k])
        tp += 1
        total += float(iou[k])
    return tp, n_pred - tp, n_true - tp, total


def object_counts(truth: np.ndarray, pred: np.ndarray, num_labels: int, truth_instances: np.ndarray | None = None,
                  pred_instances: np.ndarray | None = None, ignore: np.ndarray | None = None) -> ObjectCounts:
    """(K,) counts for the foreground classes 1..num_labels-1 of one image's label maps (H, W).

    Objects are the 8-connected components of each class, or, where given, the instance maps' objects inside that
    class. `ignore` (H, W) bool marks pixels left out ([mask] ignore_index).
    """
    rows = []
    for cls in range(1, num_labels):
        t_mask, p_mask = truth == cls, pred == cls
        if ignore is not None:
            t_mask, p_mask = t_mask & ~ignore, p_mask & ~ignore
        t_obj = np.where(t_mask, truth_instances, 0) if truth_instances is not None \
            else connected_components(t_mask, connectivity=2)
        p_obj = np.where(p_mask, pred_instances, 0) if pred_instances is not None \
            else connected_components(p_mask, connectivity=2)
        rows.append(match_objects(t_obj, p_obj))
    tp, fp, fn, iou = (np.array([r[i] for r in rows], np.float64) for i in range(4))
    return ObjectCounts(tp, fp, fn, iou)


def bootstrap_object_metric(per_image: ObjectCounts, metric: Callable[[ObjectCounts], np.ndarray],
                            resamples: int = 1000, seed: int = 0, level: float = 0.95,
                            groups: torch.Tensor | None = None) -> Interval:
    """CI of a pooled object metric (from summed counts), resampling images or `groups` of them as the pixel
    metrics' `bootstrap_counts_metric` does, so both intervals mean the same thing."""
    weights = resample_weights(per_image.tp.shape[0], resamples, seed, groups).numpy()  # (B, N)
    pooled = ObjectCounts(*(weights @ getattr(per_image, f) for f in ("tp", "fp", "fn", "iou")))  # (B, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return percentile_interval(torch.from_numpy(metric(pooled)), level)
