"""HD95 per image and bootstrap intervals: values worked out by hand, empty cases explicit."""
from __future__ import annotations

import math

import torch

from flexunet.metrics import Counts, dice
from flexunet.metrics.bootstrap import bootstrap_counts_metric, bootstrap_image_mean, resample_weights
from flexunet.metrics.distance import hd95_per_image, mean_hd95


def square(size: int, top: int, left: int, side: int, label: int = 1) -> torch.Tensor:
    out = torch.zeros(size, size, dtype=torch.long)
    out[top:top + side, left:left + side] = label
    return out


def test_hd95_of_a_square_shifted_by_two_pixels_is_two() -> None:
    pred = square(16, 4, 6, 5).unsqueeze(0)
    target = square(16, 4, 4, 5).unsqueeze(0)
    assert hd95_per_image(pred, target, 2).tolist() == [[2.0]]
    assert hd95_per_image(target, target, 2).tolist() == [[0.0]]


def test_hd95_empty_cases_are_nan_and_inf() -> None:
    empty, blob = torch.zeros(1, 8, 8, dtype=torch.long), square(8, 2, 2, 3).unsqueeze(0)
    assert math.isnan(hd95_per_image(empty, empty, 2).item())  # class in neither mask: nothing to measure
    assert math.isinf(hd95_per_image(empty, blob, 2).item())  # missed object
    assert math.isinf(hd95_per_image(blob, empty, 2).item())  # false alarm


def test_hd95_per_class_leaves_background_out() -> None:
    target = square(12, 1, 1, 4, label=1) + square(12, 6, 6, 4, label=2)
    pred = square(12, 1, 2, 4, label=1)  # class 1 shifted by 1, class 2 missed
    hd = hd95_per_image(pred.unsqueeze(0), target.unsqueeze(0), 3)
    assert hd.shape == (1, 2) and hd[0, 0].item() == 1.0 and math.isinf(hd[0, 1].item())


def test_mean_hd95_counts_one_sided_as_the_worst_and_skips_nan() -> None:
    values = torch.tensor([[1.0], [math.inf], [math.nan]], dtype=torch.float64)
    assert mean_hd95(values, worst=10.0).tolist() == [5.5]


def test_resample_weights_draw_n_images_each_time() -> None:
    weights = resample_weights(7, resamples=50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(1) == 7).all()
    assert torch.equal(weights, resample_weights(7, resamples=50, seed=3))  # seeded: same report every run


def test_bootstrap_of_identical_images_has_zero_width() -> None:
    per_image = Counts(torch.full((10, 1), 8.0), torch.full((10, 1), 2.0), torch.full((10, 1), 2.0))
    ci = bootstrap_counts_metric(per_image, dice, resamples=200)
    assert abs(ci.low.item() - 0.8) < 1e-12 and abs(ci.high.item() - 0.8) < 1e-12


def test_bootstrap_interval_brackets_the_pooled_value_and_narrows_with_more_images() -> None:
    tp = torch.tensor([[9.0], [1.0], [5.0], [7.0], [3.0], [8.0]])
    fp, fn = 10 - tp, torch.full_like(tp, 2.0)
    small = Counts(tp, fp, fn)
    pooled = dice(small.total()).item()
    ci = bootstrap_counts_metric(small, dice, resamples=2000, seed=1)
    assert ci.low.item() < pooled < ci.high.item()
    large = Counts(tp.repeat(20, 1), fp.repeat(20, 1), fn.repeat(20, 1))
    wide = ci.high - ci.low
    assert (bootstrap_counts_metric(large, dice, resamples=2000, seed=1).high
            - bootstrap_counts_metric(large, dice, resamples=2000, seed=1).low).item() < wide.item() / 2


def test_bootstrap_of_a_class_never_present_is_nan() -> None:
    zeros = torch.zeros(5, 1)
    ci = bootstrap_counts_metric(Counts(zeros, zeros, zeros), dice, resamples=100)
    assert math.isnan(ci.low.item()) and math.isnan(ci.high.item())
    values = torch.tensor([[1.0], [3.0], [math.inf]], dtype=torch.float64)
    ci = bootstrap_image_mean(values, lambda v: mean_hd95(v, 5.0), resamples=500)
    assert 1.0 <= ci.low.item() <= ci.high.item() <= 5.0
