"""Evaluation on held-out data: the seed's evaluation.csv plus honest per-image and per-class numbers."""
from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flexunet.config.folders import check_output_folders, protected_inputs
from flexunet.config.schema import Config
from flexunet.console import Bar, note, progress_bars
from flexunet.data.dataset import SegmentationDataset, make_dataset, pairs_for
from flexunet.data.io import read_mask
from flexunet.data.masks import to_grey
from flexunet.data.pairing import Pair
from flexunet.errors import ConfigError
from flexunet.evaluate.groups import Resampling, resampling_for
from flexunet.evaluate.leakage import LeakSummary, leak_summary
from flexunet.evaluate.provenance import provenance_record
from flexunet.files import atomic_write_text, check_outputs, guarded, make_folder, sha256_of
from flexunet.labels import LabelSpace
from flexunet.losses import build_loss, canonical_loss_name, default_loss_name, probs_with_targets
from flexunet.metrics import HONEST_METRICS, SEED_METRICS, Counts, confusion_counts, confusion_matrix, dice, nanmean
from flexunet.metrics.bootstrap import bootstrap_counts_metric, bootstrap_mean
from flexunet.metrics.distance import hd95_per_image, mean_hd95, one_sided_as
from flexunet.metrics.objects import (
    OBJECT_METRICS,
    ObjectCounts,
    bootstrap_object_metric,
    count_error,
    object_counts,
    object_f1,
    panoptic_quality,
)
from flexunet.postprocess import (
    CHOICE_FILE,
    PostprocessSettings,
    config_for_run,
    instance_labels,
    postprocess_hook,
    separation_notes,
    settings_for_run,
)
from flexunet.predict import Predictor, for_inference, predictor_from_config, resize_probs, to_input
from flexunet.predict.onnx import OnnxModel
from flexunet.runs.checkpoint import (
    TrainingConfig,
    load_checkpoint,
    model_from_state,
    read_training_config,
)
from flexunet.runs.device import choose_device
from flexunet.runs.distributed import DistContext, barrier, gather_objects, init_distributed, shard, shutdown
from flexunet.runs.ensemble import load_ensemble
from flexunet.runs.rundir import locked_folders, run_dir_for

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

__all__ = [
    "EvalResult", "Evaluation", "Example", "evaluate_details", "evaluate_from_config", "evaluate_run",
]


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation and where they were written."""

    loss: float
    seed_metrics: dict[str, float]  # the seed's own (batch-global, soft) metrics, for comparison
    per_class: dict[str, dict[str, float]]  # class name -> dice/iou/precision/recall (dataset-level) + per-image means
    per_image: list[dict[str, float | str]]
    files: tuple[Path, ...]
    leaks: LeakSummary | None = None  # what the dataset doctor says about the evaluated split
    resampling: Resampling | None = None  # what the bootstrap intervals resampled (source groups or images)

    @property
    def mean_dice(self) -> float:
        """Mean over foreground classes of the dataset-level Dice."""
        return float(np.nanmean([v["dice"] for v in self.per_class.values()]))


def class_names(cfg: Config) -> list[str]:
    """Names of the foreground classes: [mask] class_names without the background, else `class_1`, `class_2`, ..."""
    return cfg.label_names[1:]


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
def evaluate_details(predictor: Predictor, cfg: Config, section: str = "test", bar: Bar | None = None,
                     hd95: bool = True, examples: int = 0, pairs: list[Pair] | None = None,
                     settings: PostprocessSettings | None = None, dist_ctx: DistContext = DistContext()) -> Evaluation:
    """One pass of `predictor` over [section] (its `pairs` when the caller already listed them; `cfg` gives the
    data, loss and seed metrics): loss, seed metrics, per-image
    counts, pixel confusion matrix, HD95 per image and class, and the `examples` worst and best images by Dice (kept
    as they go, not the whole split).

    Loss and seed metrics are computed at the model's input size (as Keras' evaluate did); counts, the confusion
    matrix, HD95 and object matches at each image's original size, on labels after the predictor's postprocess;
    predicted objects are numbered as `settings` ([postprocess] separate) say. The examples show the model-size
    images.

    Under torchrun (`dist_ctx`) each process measures every world_size-th [eval] batch and all processes gather
    every batch's measures, folded in batch order: the batches are the ones one process would make, so the
    per-batch loss and seed metrics, and every per-image row, are those of one process.
    """
    dataset = make_dataset(cfg, pairs_for(cfg, section) if pairs is None else pairs)
    batch = cfg.eval.batch_size
    mine = shard(list(enumerate(range(0, len(dataset), batch))), dist_ctx)
    measured = []
    for index, start in mine:
        measured.append(measure_batch(predictor, dataset, cfg, index, start, hd95, examples, settings))
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
                      {k: float(np.mean([m.seed_metrics[k] for m in every])) for k in cfg.model.metrics}, per_image,
                      [n for m in every for n in m.names], confusion, torch.cat(distances) if distances else None,
                      worst, best, torch.tensor(diagonals, dtype=torch.float64) if diagonals else None,
                      ObjectCounts.stack([o for m in every for o in m.objects]))


def measure_batch(predictor: Predictor, dataset: SegmentationDataset, cfg: Config, index: int, start: int,
                  hd95: bool, examples: int, settings: PostprocessSettings | None = None) -> BatchMeasures:
    """The measures of [eval] batch `index` (images start .. start + batch_size of `dataset`)."""
    loss_fn = build_loss(cfg.model)
    space = predictor.space
    num_labels = space.num_labels
    # each file read once
    loaded = [dataset.load_original(i) for i in range(start, min(start + cfg.eval.batch_size, len(dataset)))]
    truths = [labels for _, labels, _ in loaded]
    resized = [dataset.to_model_size(image, labels) for image, labels, _ in loaded]
    images = [image for image, _ in resized]
    x = to_input(images, predictor.device, predictor.channels_last)
    y = torch.stack([torch.from_numpy(labels) for _, labels in resized]).to(predictor.device).long()
    probs = predictor.batch_probs(x)
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6)) if space.binary else probs.clamp_min(1e-8).log()
    loss = loss_fn(logits, y).item()
    kept_probs, target = probs_with_targets(probs, y)  # both zero at [mask] ignore_index pixels
    seed = {name: SEED_METRICS[name](target, kept_probs).item() for name in cfg.model.metrics}
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
    if cfg.mask.kind == "instances":  # the true objects are the mask's ids, not connected blobs (touching nuclei)
        ids = [to_grey(read_mask(dataset.pairs[i].mask, cfg.image.pixel_limit())).astype(np.int64)
               for i in range(start, start + len(originals))]
    objects = [object_matches(p[0].numpy(), t[0].numpy(), space, settings, i)
               for (p, t), i in zip(originals, ids, strict=True)]
    return BatchMeasures(index, loss, seed, batch_counts, names, confusion, distances, diagonals, worst, best,
                         objects)


def summarise(per_image: Counts, names: list[str], cfg: Config, hd95: Tensor | None = None,
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
        for k, cls in enumerate(class_names(cfg)):
            entry = per_class.setdefault(cls, {})
            entry[metric] = float(dataset_level[k])
            if ci is not None:
                entry[f"{metric}_ci_low"], entry[f"{metric}_ci_high"] = float(ci.low[k]), float(ci.high[k])
            entry[f"{metric}_image_mean"] = float(nanmean(image_level[:, k]))
            for row, value in zip(rows, image_level[:, k].tolist(), strict=True):
                row[f"{metric}_{cls}"] = value
    mean_ci = bootstrap_mean(dice(fg), resamples, seed, groups=groups) if resamples else None  # of the per-image mean
    for k, cls in enumerate(class_names(cfg)):
        per_class[cls]["images_with_class"] = int(((fg.tp[:, k] + fg.fn[:, k]) > 0).sum())
        if mean_ci is not None:
            per_class[cls]["dice_image_mean_ci_low"] = float(mean_ci.low[k])
            per_class[cls]["dice_image_mean_ci_high"] = float(mean_ci.high[k])
    if hd95 is not None:
        if diagonals is None:
            diagonals = torch.full((hd95.shape[0],), math.hypot(cfg.model.image_width, cfg.model.image_height))
        worst = diagonals.to(hd95.dtype)[:, None]  # (N, 1): each image's own diagonal
        mean = mean_hd95(hd95, worst)
        # replace the infinite values before resampling, so each image keeps its own diagonal
        ci = bootstrap_mean(one_sided_as(hd95, worst), resamples, seed, groups=groups) if resamples else None
        for k, cls in enumerate(class_names(cfg)):
            entry = per_class[cls]
            entry["hd95"] = float(mean[k])
            if ci is not None:
                entry["hd95_ci_low"], entry["hd95_ci_high"] = float(ci.low[k]), float(ci.high[k])
            entry["hd95_one_sided"] = int(torch.isinf(hd95[:, k]).sum())  # class in truth or prediction only
            for row, value in zip(rows, hd95[:, k].tolist(), strict=True):
                row[f"hd95_{cls}"] = value
    if objects is not None and objects.tp.shape[0] == len(names):
        add_object_metrics(per_class, rows, objects, class_names(cfg), resamples, seed, groups)
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


def _fmt(value: float | int | str) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.4f}"


def loss_name(cfg: Config) -> str:
    return canonical_loss_name(cfg.model.loss or default_loss_name(cfg.model))


def bootstrap_record(resampling: Resampling) -> dict[str, object]:
    """metrics.json's "bootstrap": what was resampled (source groups or images), how many, and from where."""
    return {**resampling.to_dict(), "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95}


REPORT_FILES = ("evaluation.csv", "per_image.csv", "per_class.csv", "metrics.json")  # and report.html


def write_reports(result_dir: Path, cfg: Config, loss: float, seed: dict[str, float],
                  per_class: dict[str, dict[str, float]], rows: list[dict], extra: dict | None = None,
                  resampling: Resampling | None = None) -> tuple[Path, ...]:
    """evaluation.csv (seed format: `<loss>,<value>` then `<metrics[0]>,<value>`), per_image.csv, per_class.csv,
    metrics.json (with `extra` entries added). `resampling` says what the intervals resampled (images if None)."""
    make_folder(result_dir)
    name = loss_name(cfg)
    seed_lines = [f"{name},{loss:.4f}"] + [f"{metric},{value:.4f}" for metric, value in list(seed.items())[:1]]
    files = [result_dir / name for name in REPORT_FILES]
    atomic_write_text(files[0], "\n".join(seed_lines) + "\n")
    keys = list(rows[0]) if rows else ["image"]
    atomic_write_text(files[1], "\n".join([",".join(keys)] + [",".join(_fmt(r[k]) for k in keys) for r in rows]) + "\n")
    columns = ["dice", "iou", "precision", "recall", "dice_image_mean", "iou_image_mean", "images_with_class"]
    added = [f"{m}_ci_{end}" for m in ("dice", "iou", "precision", "recall") for end in ("low", "high")]
    added += ["hd95", "hd95_ci_low", "hd95_ci_high", "hd95_one_sided"]
    added += ["dice_image_mean_ci_low", "dice_image_mean_ci_high"]
    added += [f"{m}{end}" for m in (*OBJECT_METRICS, "count_mae") for end in ("", "_ci_low", "_ci_high")]
    added += ["true_objects", "predicted_objects"]
    # appended: old readers keep working
    columns += [c for c in added if per_class and c in next(iter(per_class.values()))]
    unit = f"{resampling.count} {resampling.unit}" if resampling else "images"
    lines = ["class," + ",".join(columns)]
    lines += [f"{c}," + ",".join(_fmt(v[k]) for k in columns) for c, v in per_class.items()]
    atomic_write_text(files[2], "\n".join(lines) + "\n")
    atomic_write_text(files[3], json.dumps(_json_safe({
        "loss": {name: loss}, "per_class": per_class,
        "seed_metrics": {"note": "the seed's batch-global soft metrics; dice_coef_multiclass counts background",
                         **seed},
        "images": len(rows),
        "notes": {
            "ci": f"95% percentile bootstrap over {unit} ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}) "
                  f"of the pooled metric; dice_image_mean_ci_* of the per-image mean",
            "size": "Dice/IoU/precision/recall and HD95 are scored at each image's original size, on the masks "
                    "`flexunet infer` writes; loss and seed_metrics at the model's input size",
            "hd95": "pixels at the original size; mean over images with the class in truth or prediction; "
                    "hd95_one_sided images (class in only one of them) count as that image's diagonal",
            "objects": "objects are 8-connected components of each class in truth and prediction (predictions "
                       "watershed-separated where [postprocess] separate says so); a pair matches at IoU >= 0.5; "
                       "object_precision/recall/f1, sq, pq (= sq x rq, rq = f1) and count_ratio (predicted / true "
                       "objects) pooled over images; count_mae the mean over images of |predicted - true| objects",
        },
        **(extra or {}),
    }), indent=2, allow_nan=False))
    return tuple(files)


def _json_safe(value: object) -> object:
    """NaN and infinities become null: strict JSON readers (JavaScript, jq) reject the literals."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def postprocess_record(cfg: Config, postprocess: PostprocessSettings, model_dir: Path) -> dict[str, object]:
    """metrics.json's "postprocess": what was applied per class and, with auto, the validation choice it came from."""
    names = cfg.label_names
    record: dict[str, object] = {
        "auto": cfg.postprocess.auto,
        "threshold": cfg.infer.threshold if cfg.model.num_classes == 1 else None,  # binary: foreground probability
        "classes": {names[c]: postprocess[c].describe() for c in sorted(postprocess)},
        "separate": {names[c]: postprocess[c].separate for c in sorted(postprocess)
                     if postprocess[c].separate != "none"},
    }
    if cfg.postprocess.auto:
        record["choice"] = json.loads((model_dir / CHOICE_FILE).read_text())
    return record


def evaluate_from_config(cfg: Config, checkpoint: Path | None = None, device: str | None = None,
                         quiet: bool = False, tta: bool | None = None, doctor: Path | None = None,
                         examples: int = 4, report: bool = True, onnx: Path | None = None,
                         ensemble: list[Path] | None = None) -> EvalResult:
    """Evaluate the run's best checkpoint (or the ONNX file `onnx`, e.g. an int8 export, or the mean probability of
    the checkpoints in `ensemble`) on [test] (or [valid] when there is no [test]).

    The API of `flexunet evaluate`. Under torchrun each process evaluates its share of the batches, and rank 0
    writes the reports from every process's per-image rows: the same files as one process.
    """
    run = run_dir_for(cfg)
    check_output_folders(cfg, [(run.eval_key, run.eval_dir)])
    if sum(x is not None for x in (onnx, checkpoint, ensemble)) > 1:
        raise ConfigError("--onnx, --checkpoint and --ensemble: give one model to evaluate")
    checkpoint = Path(onnx) if onnx is not None else ensemble[0] if ensemble else run.checkpoint(checkpoint)
    what = "the ONNX file this command reads" if onnx is not None else "the checkpoint this command reads"
    reads = [(checkpoint, what), (doctor, "the doctor report this command reads")]
    reads += [(member, "a checkpoint of the ensemble") for member in (ensemble or [])[1:]]
    dist_ctx, dist_device = init_distributed(device)
    try:
        with guarded(protected_inputs(cfg, reads)):
            check_outputs(eval_dir_outputs(run.eval_dir, report))  # before anything is written
            torch_device = dist_device or choose_device(device)
            session, graph = None, None  # type: OnnxModel | None, dict[str, object] | None
            if onnx is not None:  # read and checked before eval_dir is made
                session = OnnxModel(Path(onnx), torch_device)
                session.check_fits(cfg.model)
                graph = {"file": str(onnx), "sha256": sha256_of([Path(onnx)])}
            with locked_folders({run.eval_dir: run.eval_key}) if dist_ctx.is_main else nullcontext():
                if session is not None and graph is not None:
                    name = f"{onnx} (ONNX, sha256 {str(graph['sha256'])[:16]})"
                    return evaluate_run(session, cfg, run.eval_dir, name, quiet, tta, doctor, examples, report, None,
                                        dist_ctx, graph)
                if ensemble:
                    members = load_ensemble(ensemble, torch_device, cfg)
                    record: dict[str, object] = {"ensemble": [str(p) for p in ensemble],
                                                 "sha256": sha256_of(ensemble)}
                    return evaluate_run(for_inference(members, torch_device), cfg, run.eval_dir, f"ensemble of "
                                        f"{len(ensemble)}: " + ", ".join(str(p) for p in ensemble), quiet, tta,
                                        doctor, examples, report, members.trainings[0], dist_ctx, record)
                state = load_checkpoint(checkpoint, torch_device)
                model = for_inference(model_from_state(state, Path(checkpoint), cfg, torch_device), torch_device)
                return evaluate_run(model, cfg, run.eval_dir, str(checkpoint), quiet, tta, doctor, examples, report,
                                    read_training_config(state, checkpoint), dist_ctx)
    finally:
        shutdown(dist_ctx)


def fold_rows(extra: dict[str, object] | None) -> list[dict] | None:
    """The out-of-fold table that `extra` carries into metrics.json, for the report."""
    rows = (extra or {}).get("folds")
    return rows if isinstance(rows, list) else None


def model_record(files: dict[str, object] | None) -> dict[str, object]:
    """metrics.json's provenance entry for a model that is not one checkpoint: "onnx" or "ensemble"."""
    if not files:
        return {}
    return {"ensemble" if "ensemble" in files else "onnx": files}


def eval_dir_outputs(eval_dir: Path, report: bool) -> list[Path]:
    """The files an evaluation writes into `eval_dir`."""
    return [Path(eval_dir) / name for name in REPORT_FILES + (("report.html",) if report else ())]


def evaluate_run(model: nn.Module, cfg: Config, eval_dir: Path, checkpoint: str = "", quiet: bool = False,
                 tta: bool | None = None, doctor: Path | None = None, examples: int = 4, report: bool = True,
                 training: TrainingConfig | None = None, dist_ctx: DistContext = DistContext(),
                 model_files: dict[str, object] | None = None) -> EvalResult:
    """Evaluate `model` on [test] (or [valid]) and write the CSVs, metrics.json and, with `report`, report.html.

    The page shows the `examples` worst and best images, and the leakage verdict from the `doctor` JSON, a
    doctor*.json in eval_dir, or a doctor run on small datasets. `training` is the config the checkpoint was trained
    with, shown apart from `cfg` (the evaluation's); None when the model was not read from a checkpoint.
    Under torchrun (`dist_ctx`) every process measures its share and rank 0 alone writes; the other processes
    return the same numbers with no files and no leakage verdict.
    """
    section = "test"
    if not (cfg.test.images_dir and cfg.test.masks_dir):
        section = "valid"
        if not quiet:
            note("no [test] folders: evaluating on [valid] (the numbers are not held-out)")
    tta = cfg.eval.tta if tta is None else tta
    cfg = config_for_run(cfg, run_dir_for(cfg).model_dir)  # the threshold `auto` chose, if it did
    postprocess = settings_for_run(cfg, run_dir_for(cfg).model_dir)
    pairs = pairs_for(cfg, section)  # listed (and oversized files reported) once for every step below
    with progress_bars(quiet or not dist_ctx.is_main) as progress:
        bar = Bar(progress, f"evaluating {section}", len(pairs))
        device = next((p.device for p in model.parameters()), None) or choose_device("cpu")  # ONNX: no parameters
        predictor = predictor_from_config(cfg, model, device, tta=tta, batch_size=cfg.eval.batch_size,
                                          postprocess=postprocess_hook(postprocess))
        ev = evaluate_details(predictor, cfg, section, bar, hd95=True, examples=examples if report else 0,
                              pairs=pairs, settings=postprocess, dist_ctx=dist_ctx)
    resampling = resampling_for(cfg, section, pairs)  # pairs in the order evaluated
    leaks = None  # decided by write_evaluation on rank 0 (the doctor)
    return write_evaluation(ev, pairs, resampling, cfg, eval_dir, section, checkpoint, quiet, tta, doctor, report,
                            training, dist_ctx, model_files, postprocess, leaks)


def write_evaluation(ev: Evaluation, pairs: list[Pair], resampling: Resampling, cfg: Config, eval_dir: Path,
                     section: str, checkpoint: str, quiet: bool, tta: bool, doctor: Path | None, report: bool,
                     training: TrainingConfig | None, dist_ctx: DistContext, model_files: dict[str, object] | None,
                     postprocess: PostprocessSettings, leaks: LeakSummary | None,
                     extra: dict[str, object] | None = None) -> EvalResult:
    """The CSVs, metrics.json and (with `report`) report.html of one evaluation `ev` of `pairs`; `leaks` None: the
    doctor's verdict on the evaluated files. `extra` goes into metrics.json as it is (the out-of-fold table)."""
    from flexunet.evaluate.report import ReportData, read_history, write_report

    per_class, rows = summarise(ev.counts, ev.names, cfg, ev.hd95, diagonals=ev.diagonals, groups=resampling.groups,
                                objects=ev.objects)
    if not dist_ctx.is_main:
        barrier(dist_ctx)  # rank 0 writes the reports
        return EvalResult(ev.loss, ev.seed_metrics, per_class, rows, (), None, resampling)
    applied = postprocess_record(cfg, postprocess, run_dir_for(cfg).model_dir)
    predicted = {name: int(v.get("predicted_objects", 0)) for name, v in per_class.items()}
    for line in separation_notes(postprocess, cfg.label_names, predicted):
        if not quiet:
            note(line)
    check_outputs(eval_dir_outputs(eval_dir, report))  # before anything is written (evaluate_run from the API too)
    if leaks is None:
        leaks = leak_summary(cfg, section, eval_dir, doctor, run_doctor=report, evaluated=[p.image for p in pairs])
    files = write_reports(eval_dir, cfg, ev.loss, ev.seed_metrics, per_class, rows,
                          {"section": section, "leakage": {"status": leaks.status, "lines": list(leaks.lines),
                                                           "source": leaks.source},
                           "tta": tta, "bootstrap": bootstrap_record(resampling),
                           "provenance": provenance_record(training, cfg) | model_record(model_files),
                           "postprocess": applied} | (extra or {}),
                          resampling)
    if report:
        curve_pngs = tuple(p.read_bytes() for p in (eval_dir / "train_losses.png", eval_dir / "train_metrics.png")
                           if p.is_file())
        data = ReportData(cfg, section, checkpoint, len(ev.names), loss_name(cfg), ev.loss, per_class,
                          dice(ev.counts.foreground()).numpy(), ev.seed_metrics,
                          ev.confusion if not LabelSpace.from_config(cfg).binary else None, ev.worst,
                          [x for x in ev.best if x.name not in {w.name for w in ev.worst}],  # small splits: no repeats
                          leaks,
                          read_history(eval_dir), curve_pngs, tuple(str(f) for f in files),
                          BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, resampling, training, applied,
                          fold_rows(extra))
        files += (write_report(eval_dir / "report.html", data),)
    barrier(dist_ctx)
    return EvalResult(ev.loss, ev.seed_metrics, per_class, rows, files, leaks, resampling)
