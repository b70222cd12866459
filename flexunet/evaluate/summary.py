"""Numbers from a pass: per-class Dice/IoU/precision/recall pooled and per image, HD95, object metrics, each with a
bootstrap interval."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from flexunet.evaluate.settings import EvalSettings
from flexunet.metrics import HONEST_METRICS, Counts, dice, nanmean
from flexunet.metrics.bootstrap import bootstrap_counts_metric, bootstrap_mean
from flexunet.metrics.distance import mean_hd95, one_sided_as
from flexunet.metrics.objects import (
    OBJECT_METRICS,
    ObjectCounts,
    bootstrap_object_metric,
    count_error,
    object_f1,
    panoptic_quality,
)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def summarise(per_image: Counts, names: list[str], settings: EvalSettings, hd95: Tensor | None = None,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
              diagonals: Tensor | None = None,
              groups: Tensor | None = None,
              objects: ObjectCounts | None = None) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Per-class dataset-level metrics with bootstrap 95% CIs and per-image means (background excluded), and one
    row per image. With `hd95` (N, K-1): its mean (a one-sided miss counted as that image's diagonal, `diagonals`,
    by default the model input's) and CI too. With `groups` (N,) the bootstrap resamples those groups of images.
    With `objects` (N, K-1): object precision/recall/F1, SQ, PQ, count ratio (pooled over images, with intervals from
    the same resampling) and the mean absolute count error per image."""
    fg = per_image.foreground()
    total = fg.total()
    per_class: dict[str, dict[str, float]] = {}
    rows = [{"image": n} for n in names]
    for metric, fn in HONEST_METRICS.items():
        dataset_level, image_level = fn(total), fn(fg)  # (K,), (N, K)
        ci = bootstrap_counts_metric(fg, fn, resamples, seed, groups=groups) if resamples else None
        for k, cls in enumerate(settings.class_names):
            entry = per_class.setdefault(cls, {})
            entry[metric] = float(dataset_level[k])
            if ci is not None:
                entry[f"{metric}_ci_low"], entry[f"{metric}_ci_high"] = float(ci.low[k]), float(ci.high[k])
            entry[f"{metric}_image_mean"] = float(nanmean(image_level[:, k]))
            for row, value in zip(rows, image_level[:, k].tolist(), strict=True):
                row[f"{metric}_{cls}"] = value
    mean_ci = bootstrap_mean(dice(fg), resamples, seed, groups=groups) if resamples else None  # of the per-image mean
    for k, cls in enumerate(settings.class_names):
        per_class[cls]["images_with_class"] = int(((fg.tp[:, k] + fg.fn[:, k]) > 0).sum())
        if mean_ci is not None:
            per_class[cls]["dice_image_mean_ci_low"] = float(mean_ci.low[k])
            per_class[cls]["dice_image_mean_ci_high"] = float(mean_ci.high[k])
    if hd95 is not None:
        if diagonals is None:
            diagonals = torch.full((hd95.shape[0],), math.hypot(*settings.input_size))
        worst = diagonals.to(hd95.dtype)[:, None]  # (N, 1): each image's own diagonal
        mean = mean_hd95(hd95, worst)
        # replace the infinite values before resampling, so each image keeps its own diagonal
        ci = bootstrap_mean(one_sided_as(hd95, worst), resamples, seed, groups=groups) if resamples else None
        for k, cls in enumerate(settings.class_names):
            entry = per_class[cls]
            entry["hd95"] = float(mean[k])
            if ci is not None:
                entry["hd95_ci_low"], entry["hd95_ci_high"] = float(ci.low[k]), float(ci.high[k])
            entry["hd95_one_sided"] = int(torch.isinf(hd95[:, k]).sum())  # class in truth or prediction only
            for row, value in zip(rows, hd95[:, k].tolist(), strict=True):
                row[f"hd95_{cls}"] = value
    if objects is not None and objects.tp.shape[0] == len(names):
        add_object_metrics(per_class, rows, objects, settings.class_names, resamples, seed, groups)
    return per_class, rows


def add_object_metrics(per_class: dict[str, dict[str, float]], rows: list[dict], objects: ObjectCounts,
                       classes: list[str], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       groups: Tensor | None = None) -> None:
    """Object metrics per class (in place): pooled from all images' matches, with percentile intervals; per image
    the true and predicted counts, F1 and PQ."""
    total = objects.total()
    for metric, fn in OBJECT_METRICS.items():
        value = fn(total)
        ci = bootstrap_object_metric(objects, fn, resamples, seed, groups=groups) if resamples else None
        for k, cls in enumerate(classes):
            per_class[cls][metric] = float(value[k])
            if ci is not None:
                per_class[cls][f"{metric}_ci_low"], per_class[cls][f"{metric}_ci_high"] = \
                    float(ci.low[k]), float(ci.high[k])
    errors = count_error(objects)  # (N, K)
    mean_ci = bootstrap_mean(torch.from_numpy(errors), resamples, seed, groups=groups) if resamples else None
    for k, cls in enumerate(classes):
        entry = per_class[cls]
        entry["count_mae"] = float(errors[:, k].mean()) if len(errors) else float("nan")
        if mean_ci is not None:
            entry["count_mae_ci_low"], entry["count_mae_ci_high"] = float(mean_ci.low[k]), float(mean_ci.high[k])
        entry["true_objects"], entry["predicted_objects"] = int(total.true[k]), int(total.predicted[k])
    f1, pq = object_f1(objects), panoptic_quality(objects)
    for i, row in enumerate(rows):
        for k, cls in enumerate(classes):
            row[f"true_objects_{cls}"] = int(objects.true[i, k])
            row[f"predicted_objects_{cls}"] = int(objects.predicted[i, k])
            row[f"object_f1_{cls}"] = float(f1[i, k])
            row[f"pq_{cls}"] = float(pq[i, k])
