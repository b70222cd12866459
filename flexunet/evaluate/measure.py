"""One pass of a Predictor over a split: per image, labels at the original size, confusion counts, HD95, objects, the
worst and best examples."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexunet.console import Bar
from flexunet.data.dataset import SegmentationDataset
from flexunet.data.io import read_mask
from flexunet.data.masks import to_grey
from flexunet.evaluate.settings import EvalSettings
from flexunet.labels import LabelSpace
from flexunet.losses import probs_with_targets
from flexunet.metrics import SEED_METRICS, Counts, confusion_counts, confusion_matrix, dice, nanmean
from flexunet.metrics.distance import hd95_per_image
from flexunet.metrics.objects import (
    ObjectCounts,
    object_counts,
)
from flexunet.postprocess import (
    PostprocessSettings,
    instance_labels,
)
from flexunet.predict import Predictor, resize_probs, to_input
from flexunet.runs.distributed import DistContext, gather_objects, shard


@dataclass(frozen=True)
class Example:
    """One image with its true and predicted label maps (H, W), for the report's best/worst overlays."""

    name: str
    score: float  # mean foreground Dice of this image
    image: np.ndarray  # (H, W, C) uint8, at the model's input size
    labels: np.ndarray
    pred: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """Everything one pass over a split measured."""

    loss: float
    seed_metrics: dict[str, float]
    counts: Counts  # per image (N, K)
    names: list[str]
    confusion: Tensor  # (K, K) pixel counts over the split, rows = true label
    hd95: Tensor | None  # (N, K-1) pixels at the original size; NaN class in neither mask, inf in only one
    worst: list[Example]
    best: list[Example]
    diagonals: Tensor | None = None  # (N,) each image's diagonal in pixels: what a one-sided HD95 counts as
    objects: ObjectCounts | None = None  # (N, K-1) object matches per image and foreground class


def keep_extremes(kept: list[Example], new: list[Example], k: int, worst: bool) -> list[Example]:
    """The k lowest (worst) or highest scores of kept + new: memory O(k), however large the split."""
    merged = sorted(kept + new, key=lambda e: e.score, reverse=not worst)
    return merged[:k]


def at_original_size(truths: list[np.ndarray], probs: Tensor, predictor: Predictor) -> list[tuple[Tensor, Tensor]]:
    """(prediction, truth) label maps (1, H0, W0) per image at its mask's own size. The probabilities are resized
    and turned into labels by `predictor.label_map` (thresholds, then [postprocess]), exactly as `flexunet infer`
    does before it writes a mask."""
    out = []
    for truth, p in zip(truths, probs.float().cpu().numpy(), strict=True):
        labels = predictor.label_map(resize_probs(p, truth.shape[1], truth.shape[0]))
        out.append((torch.from_numpy(labels).long()[None], torch.from_numpy(truth).long()[None]))
    return out


def object_matches(pred: np.ndarray, truth: np.ndarray, space: LabelSpace,
                  settings: PostprocessSettings | None = None, truth_instances: np.ndarray | None = None
                  ) -> ObjectCounts:
    """(K-1,) object matches of one image: true objects are connected components, predicted ones are the instances
    `flexunet infer --instances` writes (watershed-separated where [postprocess] separate says so)."""
    instances, _ = instance_labels(pred, settings or {}, space.num_labels)
    ignore = truth == space.ignore_index if space.ignore_index is not None else None
    return object_counts(truth, pred, space.num_labels, truth_instances=truth_instances, pred_instances=instances,
                         ignore=ignore)


@dataclass(frozen=True)
class BatchMeasures:
    """What one evaluation batch measured; batch `index` orders them when processes return theirs."""

    index: int
    loss: float
    seed_metrics: dict[str, float]
    counts: Counts  # per image (n, K)
    names: list[str]
    confusion: Tensor  # (K, K)
    distances: list[Tensor]  # HD95 (1, K-1) per image, when asked for
    diagonals: list[float]
    worst: list[Example]  # at most `examples` of this batch
    best: list[Example]
    objects: list[ObjectCounts]  # (K-1,) object matches per image


@torch.no_grad()
def evaluate_details(predictor: Predictor, dataset: SegmentationDataset, settings: EvalSettings,
                     bar: Bar | None = None, hd95: bool = True, examples: int = 0,
                     postprocess: PostprocessSettings | None = None,
                     dist_ctx: DistContext = DistContext()) -> Evaluation:
    """One pass of `predictor` over `dataset` (`settings` give the batches, loss and seed metrics): loss, seed
    metrics, per-image
    counts, pixel confusion matrix, HD95 per image and class, and the `examples` worst and best images by Dice (kept
    as they go, not the whole split).

    Loss and seed metrics are computed at the model's input size (as Keras' evaluate did); counts, the confusion
    matrix, HD95 and object matches at each image's original size, on labels after the predictor's postprocess;
    predicted objects are numbered as `postprocess` ([postprocess] separate) says. The examples show the model-size
    images.

    Under torchrun (`dist_ctx`) each process measures every world_size-th [eval] batch and all processes gather
    every batch's measures, folded in batch order: the batches are the ones one process would make, so the
    per-batch loss and seed metrics, and every per-image row, are those of one process.
    """
    batch = settings.batch_size
    mine = shard(list(enumerate(range(0, len(dataset), batch))), dist_ctx)
    measured = []
    for index, start in mine:
        measured.append(measure_batch(predictor, dataset, settings, index, start, hd95, examples, postprocess))
        if bar is not None:
            bar.advance(len(measured[-1].names))
    every = sorted((m for part in gather_objects(measured, dist_ctx) for m in part), key=lambda m: m.index)
    worst: list[Example] = []
    best: list[Example] = []
    for m in every:  # stable sorts in batch order: the extremes one process would keep
        worst = keep_extremes(worst, m.worst, examples, worst=True)
        best = keep_extremes(best, m.best, examples, worst=False)
    distances = [d for m in every for d in m.distances]
    diagonals = [d for m in every for d in m.diagonals]
    per_image = Counts(*(torch.cat([getattr(m.counts, f) for m in every]).cpu() for f in ("tp", "fp", "fn")))
    confusion = torch.zeros(predictor.space.num_labels, predictor.space.num_labels, dtype=torch.float64)
    for m in every:
        confusion += m.confusion
    return Evaluation(float(np.mean([m.loss for m in every])),
                      {k: float(np.mean([m.seed_metrics[k] for m in every])) for k in settings.seed_metrics}, per_image,
                      [n for m in every for n in m.names], confusion, torch.cat(distances) if distances else None,
                      worst, best, torch.tensor(diagonals, dtype=torch.float64) if diagonals else None,
                      ObjectCounts.stack([o for m in every for o in m.objects]))


def measure_batch(predictor: Predictor, dataset: SegmentationDataset, settings: EvalSettings, index: int, start: int,
                  hd95: bool, examples: int, postprocess: PostprocessSettings | None = None) -> BatchMeasures:
    """The measures of [eval] batch `index` (images start .. start + batch_size of `dataset`)."""
    space = predictor.space
    num_labels = space.num_labels
    # each file read once
    loaded = [dataset.load_original(i) for i in range(start, min(start + settings.batch_size, len(dataset)))]
    truths = [labels for _, labels, _ in loaded]
    resized = [dataset.to_model_size(image, labels) for image, labels, _ in loaded]
    images = [image for image, _ in resized]
    x = to_input(images, predictor.device, predictor.channels_last)
    y = torch.stack([torch.from_numpy(labels) for _, labels in resized]).to(predictor.device).long()
    probs = predictor.batch_probs(x)
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6)) if space.binary else probs.clamp_min(1e-8).log()
    loss = settings.loss(logits, y).item()
    kept_probs, target = probs_with_targets(probs, y)  # both zero at [mask] ignore_index pixels
    seed = {name: SEED_METRICS[name](target, kept_probs).item() for name in settings.seed_metrics}
    pred = space.labels(probs)
    if predictor.postprocess is not None:  # the examples show postprocessed masks too
        pred = torch.stack([torch.from_numpy(predictor.label_map(p)) for p in probs.float().cpu().numpy()])
    # honest metrics at each image's original size, on the masks `flexunet infer` would write
    originals = at_original_size(truths, probs, predictor)
    each = [confusion_counts(p, t, num_labels) for p, t in originals]
    batch_counts = Counts(*(torch.cat([getattr(c, f) for c in each]).cpu() for f in ("tp", "fp", "fn")))
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64)
    for p, t in originals:
        confusion += confusion_matrix(p, t, num_labels).sum(0).double().cpu()
    names = [dataset.pairs[i].image.name for i in range(start, start + len(loaded))]
    distances = [hd95_per_image(p, t, num_labels).cpu() for p, t in originals] if hd95 else []
    diagonals = [math.hypot(*t.shape[-2:]) for _, t in originals] if hd95 else []
    worst: list[Example] = []
    best: list[Example] = []
    if examples:
        scores = nanmean(dice(batch_counts.foreground()), dim=1)
        candidates = [Example(n, float(s), im.copy(), lab.cpu().numpy().astype(np.uint8),
                              p.cpu().numpy().astype(np.uint8))
                      for n, s, im, lab, p in zip(names, scores.tolist(), images, y, pred, strict=True)
                      if not math.isnan(s)]
        worst = keep_extremes([], candidates, examples, worst=True)
        best = keep_extremes([], candidates, examples, worst=False)
    ids: list[np.ndarray | None] = [None] * len(originals)
    if settings.instances:  # the true objects are the mask's ids, not connected blobs (touching nuclei)
        ids = [to_grey(read_mask(dataset.pairs[i].mask, settings.pixel_limit)).astype(np.int64)
               for i in range(start, start + len(originals))]
    objects = [object_matches(p[0].numpy(), t[0].numpy(), space, postprocess, i)
               for (p, t), i in zip(originals, ids, strict=True)]
    return BatchMeasures(index, loss, seed, batch_counts, names, confusion, distances, diagonals, worst, best,
                         objects)
