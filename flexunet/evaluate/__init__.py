"""Evaluation on held-out data: the seed's evaluation.csv plus honest per-image and per-class numbers."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flexunet.config.load import config_from_text
from flexunet.config.schema import Config
from flexunet.console import Bar, note, progress_bars
from flexunet.data.dataset import make_dataset, pairs_for
from flexunet.errors import CheckpointError
from flexunet.infer.predict import forward_probs, to_input
from flexunet.losses import build_loss, canonical_loss_name, default_loss_name
from flexunet.metrics import HONEST_METRICS, SEED_METRICS, Counts, confusion_counts, nanmean
from flexunet.models import build_model
from flexunet.train.checkpoint import load_checkpoint, load_weights
from flexunet.train.device import choose_device
from flexunet.train.rundir import atomic_write_text

__all__ = ["EvalResult", "evaluate_from_config", "evaluate_model", "load_trained_model"]


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation and where they were written."""

    loss: float
    seed_metrics: dict[str, float]  # the seed's own (batch-global, soft) metrics, for comparison
    per_class: dict[str, dict[str, float]]  # class name -> dice/iou/precision/recall (dataset-level) + per-image means
    per_image: list[dict[str, float | str]]
    files: tuple[Path, ...]

    @property
    def mean_dice(self) -> float:
        """Mean over foreground classes of the dataset-level Dice."""
        return float(np.nanmean([v["dice"] for v in self.per_class.values()]))


def load_trained_model(checkpoint: Path, device: torch.device, cfg: Config | None = None) -> tuple[nn.Module, Config]:
    """The model stored in a checkpoint, built from the config inside it (or `cfg` when given), in eval mode."""
    state = load_checkpoint(checkpoint, device)
    if cfg is None:
        try:
            cfg = config_from_text(str(state["config"]), f"{Path(checkpoint).name}:config")
        except Exception as exc:  # a checkpoint from another version: say which file, not a traceback
            raise CheckpointError(f"{checkpoint}: its stored config does not load ({str(exc).splitlines()[0]})") from None
    model = build_model(cfg.model)
    load_weights(model, state, Path(checkpoint))
    return model.to(device).eval(), cfg


def class_names(cfg: Config) -> list[str]:
    """Names of the foreground classes, e.g. `class_1`."""
    return [f"class_{i}" for i in range(1, max(cfg.model.num_classes, 2))]


@torch.no_grad()
def evaluate_model(model: nn.Module, cfg: Config, section: str = "test", device: torch.device | None = None,
                   tta: bool = False, bar: Bar | None = None) -> tuple[float, dict[str, float], Counts, list[str]]:
    """Loss, seed metrics (batch means, as Keras' evaluate), per-image counts (N, K) and image names."""
    device = device or next(model.parameters()).device
    dataset = make_dataset(cfg, pairs_for(cfg, section))
    loss_fn = build_loss(cfg.model)
    num_labels = max(cfg.model.num_classes, 2)
    batch = cfg.eval.batch_size
    losses, seed = [], {name: [] for name in cfg.model.metrics}
    counts, names = [], []
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        x = to_input([im.permute(1, 2, 0).numpy() for im, _ in items], device)
        y = torch.stack([lab for _, lab in items]).to(device).long()
        probs = forward_probs(model, x, tta)
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6)) if probs.shape[1] == 1 else probs.clamp_min(1e-8).log()
        losses.append(loss_fn(logits, y).item())
        target = y.unsqueeze(1).float() if probs.shape[1] == 1 else torch.nn.functional.one_hot(y, probs.shape[1]).permute(0, 3, 1, 2).float()
        for name in seed:
            seed[name].append(SEED_METRICS[name](target, probs).item())
        pred = (probs[:, 0] > cfg.infer.threshold).long() if probs.shape[1] == 1 else probs.argmax(1)
        counts.append(confusion_counts(pred, y, num_labels))
        names += [dataset.pairs[i].image.name for i in range(start, start + len(items))]
        if bar is not None:
            bar.advance(len(items))
    per_image = Counts(*(torch.cat([getattr(c, f) for c in counts]).cpu() for f in ("tp", "fp", "fn")))
    return float(np.mean(losses)), {k: float(np.mean(v)) for k, v in seed.items()}, per_image, names


def summarise(per_image: Counts, names: list[str], cfg: Config) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Per-class dataset-level metrics and per-image means (background excluded), and one row per image."""
    fg = Counts(per_image.tp[:, 1:], per_image.fp[:, 1:], per_image.fn[:, 1:])
    total = fg.total()
    per_class = {}
    rows = [{"image": n} for n in names]
    for metric, fn in HONEST_METRICS.items():
        dataset_level, image_level = fn(total), fn(fg)  # (K,), (N, K)
        for k, cls in enumerate(class_names(cfg)):
            entry = per_class.setdefault(cls, {})
            entry[metric] = float(dataset_level[k])
            entry[f"{metric}_image_mean"] = float(nanmean(image_level[:, k]))
            for row, value in zip(rows, image_level[:, k].tolist()):
                row[f"{metric}_{cls}"] = value
    for k, cls in enumerate(class_names(cfg)):
        per_class[cls]["images_with_class"] = int(((fg.tp[:, k] + fg.fn[:, k]) > 0).sum())
    return per_class, rows


def _fmt(value: float | int | str) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.4f}"


def write_reports(result_dir: Path, cfg: Config, loss: float, seed: dict[str, float],
                  per_class: dict[str, dict[str, float]], rows: list[dict]) -> tuple[Path, ...]:
    """evaluation.csv (seed format: `<loss>,<value>` then `<metrics[0]>,<value>`), per_image.csv, per_class.csv,
    metrics.json."""
    result_dir.mkdir(parents=True, exist_ok=True)
    loss_name = canonical_loss_name(cfg.model.loss or default_loss_name(cfg.model))
    seed_lines = [f"{loss_name},{loss:.4f}"] + [f"{name},{value:.4f}" for name, value in list(seed.items())[:1]]
    files = [result_dir / "evaluation.csv", result_dir / "per_image.csv", result_dir / "per_class.csv", result_dir / "metrics.json"]
    atomic_write_text(files[0], "\n".join(seed_lines) + "\n")
    keys = list(rows[0]) if rows else ["image"]
    atomic_write_text(files[1], "\n".join([",".join(keys)] + [",".join(_fmt(r[k]) for k in keys) for r in rows]) + "\n")
    columns = ["dice", "iou", "precision", "recall", "dice_image_mean", "iou_image_mean", "images_with_class"]
    lines = ["class," + ",".join(columns)] + [f"{c}," + ",".join(_fmt(v[k]) for k in columns) for c, v in per_class.items()]
    atomic_write_text(files[2], "\n".join(lines) + "\n")
    atomic_write_text(files[3], json.dumps({
        "loss": {loss_name: loss}, "per_class": per_class,
        "seed_metrics": {"note": "the seed's batch-global soft metrics; dice_coef_multiclass counts background", **seed},
        "images": len(rows),
    }, indent=2, allow_nan=True))
    return tuple(files)


def evaluate_from_config(cfg: Config, checkpoint: Path | None = None, device: str | None = None,
                         quiet: bool = False, tta: bool | None = None) -> EvalResult:
    """Evaluate the run's best checkpoint on [test] (or [valid] when there is no [test]); the API of `flexunet evaluate`."""
    from flexunet.train import run_dir_for

    run = run_dir_for(cfg)
    torch_device = choose_device(device)
    checkpoint = Path(checkpoint) if checkpoint else (run.best if run.best.is_file() else run.last)
    model, _ = load_trained_model(checkpoint, torch_device, cfg)
    section = "test"
    if not (cfg.test.images_dir and cfg.test.masks_dir):
        section = "valid"
        if not quiet:
            note("no [test] folders: evaluating on [valid] (the numbers are not held-out)")
    with progress_bars(quiet) as progress:
        n = len(pairs_for(cfg, section))
        bar = Bar(progress, f"evaluating {section}", n)
        loss, seed, per_image, names = evaluate_model(model, cfg, section, torch_device, cfg.eval.tta if tta is None else tta, bar)
    per_class, rows = summarise(per_image, names, cfg)
    files = write_reports(run.eval_dir, cfg, loss, seed, per_class, rows)
    return EvalResult(loss, seed, per_class, rows, files)
