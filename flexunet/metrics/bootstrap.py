"""Bootstrap confidence intervals: how much a score would move with a different test set of this size.

A test set of 129 images gives a Dice with an error bar of a few points; printing four decimals without it invites
comparing models on noise. When images come in groups (13 flips and rotations of one source cell), the groups are
resampled, not the images: the copies of one cell are not independent draws, and resampling them one by one gives
an interval several times too narrow.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexunet.metrics.counts import Counts


@dataclass(frozen=True)
class Interval:
    """Lower and upper bounds per class, each (K,); NaN where no resample defined the metric."""

    low: Tensor
    high: Tensor


def resample_weights(num_images: int, resamples: int = 1000, seed: int = 0, groups: Tensor | None = None) -> Tensor:
    """(B, N) how many times each image is drawn in each resample.

    Without `groups`: N images drawn with replacement. With `groups` (N,), each image's group index in 0..G-1: G
    groups drawn with replacement, and each image counts as often as its group was drawn.
    """
    units = num_images if groups is None else int(groups.max()) + 1
    rng = np.random.default_rng(seed)
    drawn = torch.from_numpy(rng.multinomial(units, np.full(units, 1.0 / max(units, 1)), size=resamples)).double()
    return drawn if groups is None else drawn[:, groups.long()]  # (B, G) -> (B, N)


def percentile_interval(samples: Tensor, level: float = 0.95) -> Interval:
    """Percentile interval of (B, K) bootstrap samples, NaN samples ignored."""
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class NaN in every resample gets NaN bounds
        low, high = np.nanpercentile(samples.numpy(), [tail, 100 - tail], axis=0)
    return Interval(torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64))


def bootstrap_counts_metric(per_image: Counts, metric: Callable[[Counts], Tensor], resamples: int = 1000,
                            seed: int = 0, level: float = 0.95, groups: Tensor | None = None) -> Interval:
    """CI of a dataset-level metric (computed from summed counts) by resampling images, or `groups` of them, per class.

    per_image: (N, K) counts. Each resample sums the counts of the images drawn and applies `metric`, so the
    interval is for the same number that is reported (pooled Dice), not for a per-image mean.
    """
    weights = resample_weights(per_image.tp.shape[0], resamples, seed, groups)  # (B, N)
    pooled = Counts(*(weights @ getattr(per_image, f).double() for f in ("tp", "fp", "fn")))  # (B, K)
    return percentile_interval(metric(pooled), level)


def bootstrap_mean(values: Tensor, resamples: int = 1000, seed: int = 0, level: float = 0.95,
                   groups: Tensor | None = None) -> Interval:
    """CI of the mean over images of per-image values (N, K) (e.g. Dice, HD95), NaN values left out of each mean;
    images resampled one by one or, with `groups` (N,), by group."""
    if values.shape[0] == 0:
        return Interval(*(torch.full(values.shape[1:], float("nan"), dtype=torch.float64) for _ in range(2)))
    weights = resample_weights(values.shape[0], resamples, seed, groups)  # (B, N)
    defined = ~torch.isnan(values)
    sums = weights @ torch.where(defined, values.double(), 0.0)  # (B, K)
    return percentile_interval(sums / (weights @ defined.double()), level)  # 0/0 = NaN: no defined value drawn
