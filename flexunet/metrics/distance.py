"""Boundary distance per image and class: HD95 (95th percentile symmetric Hausdorff distance, in pixels).

Dice hides where a mask is wrong; HD95 says how far its boundary strays, which matters for cells touching each other.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor


def hd95_per_image(pred: Tensor, target: Tensor, num_labels: int) -> Tensor:
    """HD95 in pixels for each image and foreground class, shape (N, num_labels - 1).

    pred, target: label maps (N, H, W). MONAI computes the distance; the empty cases are set here, explicitly:
    NaN where the class is in neither mask (nothing to measure, like Dice), inf where it is in only one of them
    (a missed object or a pure false alarm has no finite boundary distance).
    """
    from monai.metrics import compute_hausdorff_distance

    ignored = target >= num_labels  # [mask] ignore_index: background in both, so no boundary passes through it
    pred, target = pred.masked_fill(ignored, 0), target.masked_fill(ignored, 0)
    pred_1h = torch.nn.functional.one_hot(pred.long().cpu(), num_labels).permute(0, 3, 1, 2)  # (N, K, H, W)
    target_1h = torch.nn.functional.one_hot(target.long().cpu(), num_labels).permute(0, 3, 1, 2)
    with warnings.catch_warnings():  # MONAI warns on empty masks; they are handled below
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(pred_1h, target_1h, include_background=False, percentile=95).double()
    in_pred = pred_1h[:, 1:].flatten(2).any(2)  # (N, K-1)
    in_target = target_1h[:, 1:].flatten(2).any(2)
    hd = torch.where(in_pred & in_target, hd, torch.full_like(hd, math.inf))
    return torch.where(in_pred | in_target, hd, torch.full_like(hd, math.nan))


def one_sided_as(values: Tensor, worst: float | Tensor) -> Tensor:
    """HD95 values (..., N, K) with each infinite (one-sided) entry replaced by `worst`: a number, or one per
    image as (N, 1) (each image's diagonal)."""
    return torch.where(torch.isinf(values), torch.as_tensor(worst, dtype=values.dtype), values)


def mean_hd95(values: Tensor, worst: float | Tensor) -> Tensor:
    """Mean over images per class (..., N, K) -> (..., K), an infinite HD95 counted as `worst` (the image diagonal).

    Dropping the infinite ones would reward a model for missing whole objects; the diagonal is the largest
    distance two boundaries in the image can have. NaN (class in neither mask) is left out.
    """
    return torch.nanmean(one_sided_as(values, worst), dim=-2)
