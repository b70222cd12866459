"""Bootstrap confidence intervals over images: how much a score would move with a different test set of this size.

A test set of 129 images gives a Dice with an error bar of a few points; printing four decimals without it invites
comparing models on noise.
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


def resample_weights(num_images: int, resamples: int = 1000, seed: int = 0) -> Tensor:
    """(B, N) how many times each image is drawn in each resample (with replacement, N draws)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=resamples)).double()


def percentile_interval(samples: Tensor, level: float = 0.95) -> Interval:
    """Percentile interval of (B, K) bootstrap samples, NaN samples ignored."""
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class NaN in every resample gets NaN bounds
        low, high = np.nanpercentile(samples.numpy(), [tail, 100 - tail], axis=0)
    return Interval(torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64))


def bootstrap_counts_metric(per_image: Counts, metric: Callable[[Counts], Tensor], resamples: int = 1000,
                            seed: int = 0, level: float = 0.95) -> Interval:
    """CI of a dataset-level metric (computed from summed counts) by resampling images, per class.

    per_image: (N, K) counts. Each resample sums the counts of N images drawn with replacement and applies
    `metric`, so the interval is for the same number that is reported (pooled Dice), not for a per-image mean.
    """
    weights = resample_weights(per_image.tp.shape[0], resamples, seed)  # (B, N)
    pooled = Counts(*(weights @ getattr(per_image, f).double() for f in ("tp", "fp", "fn")))  # (B, K)
    return percentile_interval(metric(pooled), level)


def bootstrap_image_mean(values: Tensor, reduce: Callable[[Tensor], Tensor], resamples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> Interval:
    """CI of a statistic over per-image values (N, K) (e.g. mean HD95), `reduce` mapping (B, N, K) -> (B, K)."""
    n = values.shape[0]
    if n == 0:
        return Interval(*(torch.full(values.shape[1:], float("nan"), dtype=torch.float64) for _ in range(2)))
    index = torch.from_numpy(np.random.default_rng(seed).integers(0, n, size=(resamples, n)))  # (B, N)
    return percentile_interval(reduce(values.double()[index]), level)
