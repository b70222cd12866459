"""Honest segmentation metrics from confusion counts: per class, background excluded by the caller's choice.

A class absent from both prediction and target gives NaN, not 1, so averages over images stay honest.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives per class, shape (..., K)."""

    tp: Tensor
    fp: Tensor
    fn: Tensor

    def total(self) -> "Counts":
        """Sum over images (dataset-level counts), shape (K,)."""
        return Counts(self.tp.sum(0), self.fp.sum(0), self.fn.sum(0))

    def foreground(self) -> "Counts":
        """The counts without label 0 (background), which would otherwise dominate every average."""
        return Counts(self.tp[..., 1:], self.fp[..., 1:], self.fn[..., 1:])


def confusion_matrix(pred: Tensor, target: Tensor, num_labels: int) -> Tensor:
    """Per-image confusion matrices (N, K, K), rows = true label, columns = predicted label.

    pred, target: label maps (N, H, W) with values in [0, num_labels). Target pixels labelled num_labels or more
    ([mask] ignore_index) are left out: they count for no class.
    """
    n, cells = pred.shape[0], num_labels * num_labels
    target, pred = target.reshape(n, -1).long(), pred.reshape(n, -1).long()
    flat = torch.where(target < num_labels, target * num_labels + pred, cells)  # ignored pixels -> an extra bin
    offsets = torch.arange(n, device=flat.device).unsqueeze(1) * (cells + 1)
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=n * (cells + 1))
    return counts.reshape(n, cells + 1)[:, :cells].reshape(n, num_labels, num_labels)


def confusion_counts(pred: Tensor, target: Tensor, num_labels: int) -> Counts:
    """tp, fp, fn per image and class, each (N, K)."""
    cm = confusion_matrix(pred, target, num_labels).double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    return Counts(tp=tp, fp=cm.sum(1) - tp, fn=cm.sum(2) - tp)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("nan")))


def dice(c: Counts) -> Tensor:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Counts) -> Tensor:
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: Counts) -> Tensor:
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Counts) -> Tensor:
    return _ratio(c.tp, c.tp + c.fn)


HONEST_METRICS = {"dice": dice, "iou": iou, "precision": precision, "recall": recall}


def nanmean(values: Tensor, dim: int | None = None) -> Tensor:
    """Mean ignoring NaN (a class absent from an image); NaN when every entry is NaN."""
    return torch.nanmean(values) if dim is None else torch.nanmean(values, dim=dim)
