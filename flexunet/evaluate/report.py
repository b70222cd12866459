"""report.html: one self-contained page (inline CSS, images as base64 PNG, no script, no network) that a person reads
to decide whether an evaluation can be trusted: honest per-class numbers with error bars, the worst images, the
training curves, the config that produced them, and whether the test images leak from train.

Every value shown passes through `html.escape`; the page is built from plain string templates.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from torch import Tensor

from flexunet.config.schema import Config
from flexunet.console import plural
from flexunet.evaluate.figures import curves_png, dice_histogram_png, png_data_uri
from flexunet.evaluate.groups import UNIT_GROUPS, Resampling
from flexunet.evaluate.leakage import LeakSummary
from flexunet.evaluate.sections import (
    config_differences,
    config_tables,
    confusion_table,
    e,
    error_legend,
    examples_table,
    fmt,
    folds_section,
    object_table,
    objects_table,
    per_class_table,
    postprocess_section,
    seed_table,
)
from flexunet.evaluate.settings import EvalSettings
from flexunet.files import atomic_write_text
from flexunet.postprocess import PostprocessSettings
from flexunet.runs.checkpoint import TrainingConfig

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #1d2330; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
h2 { font-size: 1.15em; margin-top: 28px; border-bottom: 1px solid #d5d9e0; }
.meta { color: #5a6272; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d5d9e0; padding: 4px 8px; text-align: right; }
th { background: #f1f3f6; } td.name, th.name { text-align: left; }
.ci { color: #5a6272; font-size: 0.85em; white-space: nowrap; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 12px 0; }
.leak { background: #fde8e8; border: 1px solid #e0a0a0; } .clean { background: #e6f4ea; border: 1px solid #9cc9a8; }
.unknown { background: #fff6e0; border: 1px solid #e5c97a; }
.seed { background: #f7f7f7; color: #555; }
.examples img { image-rendering: pixelated; width: 480px; border: 1px solid #d5d9e0; }
.summary { font-size: 1.08em; margin: 10px 0 4px; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555; vertical-align: -0.1em;
          margin: 0 4px 0 12px; }
.examples td { vertical-align: top; text-align: left; }
.origin-file { color: #1b6e3a; } .origin-command { color: #a4471b; font-weight: 600; }
.origin-default { color: #8a909c; }
details summary { cursor: pointer; color: #2d5fa8; }
"""


@dataclass(frozen=True, kw_only=True)
class ReportData:
    """Everything the page shows, computed before rendering so the renderer stays a pure function."""

    cfg: Config  # shown as the evaluation's settings, beside the training config
    settings: EvalSettings
    section: str
    checkpoint: str
    images: int
    loss_name: str
    loss: float
    per_class: dict[str, dict[str, float]]
    per_image_dice: np.ndarray  # (N, K) per image and foreground class; NaN where undefined
    seed_metrics: dict[str, float]
    confusion: Tensor | None  # (K, K) pixel counts, rows = true label; None for binary models
    worst: Sequence  # Example (from flexunet.evaluate)
    best: Sequence
    leaks: LeakSummary
    history: list[dict[str, float]]  # rows of eval_dir/history.csv; empty when there is none
    curve_pngs: tuple[bytes, ...]  # train_losses.png / train_metrics.png, used when there is no history.csv
    files: tuple[str, ...]
    resamples: int
    seed: int
    resampling: Resampling | None = None  # what the bootstrap drew: source groups or images (None: images)
    training: TrainingConfig | None = None  # the checkpoint's config; None when the model was passed in code
    postprocess: dict | None = None  # metrics.json's "postprocess": what was applied, and the auto choice
    folds: list[dict] | None = None  # out of fold: per fold its checkpoint, images and Dice per class


def summary_sentence(data: ReportData) -> str:
    """One plain-language sentence from the computed numbers: each class's pooled Dice with its interval, and the
    weakest image. Numbers on [valid] (no [test] folders) say so: the run chose its best epoch on them."""
    def one(name: str, v: dict[str, float]) -> str:
        if math.isnan(v.get("dice", math.nan)):
            return f"{name} with no Dice (absent from truth and prediction)"
        ci = f" (95% CI {fmt(v['dice_ci_low'], 2)}–{fmt(v['dice_ci_high'], 2)})" if "dice_ci_low" in v else ""
        return f"{name} with a Dice of {fmt(v['dice'], 2)}{ci}"
    classes = [one(name, v) for name, v in data.per_class.items()]
    listed = classes[0] if len(classes) == 1 else ", ".join(classes[:-1]) + " and " + classes[-1]
    images = plural(data.images, "image")
    where = (f"{data.images} {images} (on [valid], not held out)" if data.section == "valid"
             else f"{data.images} {data.section} {images}")
    text = f"On {where} the model outlines {listed}"
    if data.worst:
        text += f"; its weakest image is {data.worst[0].name} (Dice {fmt(data.worst[0].score, 2)})"
    return text + "."


def provenance_sections(data: ReportData) -> str:
    """The config the checkpoint was trained with, then the evaluation's settings, each value with its origin."""
    legend = ('<p>Where each value came from: <span class="origin-file">file</span>, '
              '<span class="origin-command">command line</span> (--set) or '
              '<span class="origin-default">default</span>.</p>')
    evaluation = (f'<p>[{e(data.section)}] evaluated with checkpoint {e(data.checkpoint or "(model passed in code)")}.'
                  f'</p>{legend}<details><summary>the evaluation\'s whole config</summary>'
                  f'{config_tables(data.cfg)}</details>')
    training = data.training
    if training is None or training.cfg is None:
        why = training.problem if training is not None else "the model was passed in code, not read from a checkpoint"
        return (f'<h2>Training config</h2><div id="training-config"><p>Not available: {e(why)}.</p></div>'
                f'<h2>Evaluation settings</h2><div id="evaluation-config">{legend}{config_tables(data.cfg)}</div>')
    recorded = "" if training.origins_recorded else (
        "<p>This checkpoint predates stored origins: its values are shown, not where they came from.</p>")
    return (f'<h2>Training config (stored in the checkpoint)</h2><div id="training-config">{legend}{recorded}'
            f'{config_tables(training.cfg, training.origins_recorded)}</div>'
            f'<h2>Evaluation settings</h2><div id="evaluation-config">'
            f'<p>Keys the evaluation set differently from training:</p>{config_differences(training.cfg, data.cfg)}'
            f'{evaluation}</div>')


def interval_sentence(data: ReportData) -> str:
    """What the bracketed intervals resampled: source groups (copies of one source drawn together) or images."""
    r = data.resampling
    unit, count = (r.unit, r.count) if r is not None else ("images", data.images)
    grouped = r is not None and r.unit == UNIT_GROUPS
    source = f"; groups from the {e(r.source)}" if grouped and r is not None else ""
    why = ". The flips and rotations of one source are drawn together: they are not independent images"
    why = why if grouped else ""
    return (f'<span id="interval-unit" data-unit="{e(unit)}" data-count="{e(count)}">95% bootstrap interval over '
            f'{e(count)} {e(unit)}</span> ({e(data.resamples)} resamples, seed {e(data.seed)}{source}){why}')


def leak_banner(leaks: LeakSummary, section: str) -> str:
    css = {"leak": "leak", "clean": "clean"}.get(leaks.status, "unknown")
    title = {"leak": f"LEAK: the {section} images are not independent of the training images",
             "clean": f"no {section} image was found in another split"}.get(leaks.status, "leakage not checked")
    lines = "".join(f"<li>{e(line)}</li>" for line in leaks.lines)
    source = f'<div class="meta">source: {e(leaks.source)}</div>' if leaks.source else ""
    return (f'<div id="leakage" class="banner {css}" data-status="{e(leaks.status)}"><strong>{e(title)}</strong>'
            f"<ul>{lines}</ul>{source}</div>")


def render_report(data: ReportData) -> str:
    """The whole page as one HTML string."""
    cfg = data.cfg
    names = list(data.per_class)
    applied = _applied(data)
    histogram = png_data_uri(dice_histogram_png(data.per_image_dice, names)) if len(data.per_image_dice) else ""
    if data.history:
        curves = f'<img alt="training curves" src="{png_data_uri(curves_png(data.history))}">'
    elif data.curve_pngs:
        curves = "".join(f'<img alt="training curves" src="{png_data_uri(p)}" style="width: 48%">'
                         for p in data.curve_pngs)
    else:
        curves = "<p>No history.csv or training plots in the run folder.</p>"
    confusion = (f"<h2>Confusion matrix (pixels, row-normalised)</h2>{confusion_table(data.confusion, cfg.label_names)}"
                 if data.confusion is not None else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>flexunet evaluation: {e(cfg.model.model)} on {e(data.section)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Evaluation of {e(cfg.model.model)} on [{e(data.section)}]</h1>",
        f'<p id="summary" class="summary">{e(summary_sentence(data))}</p>',
        f'<div class="meta">{e(data.images)} {plural(data.images, "image")} · checkpoint {e(data.checkpoint)}'
        f' · config {e(cfg.source or "built in code")}'
        f' · {e(datetime.now().strftime("%Y-%m-%d %H:%M"))}</div>',
        leak_banner(data.leaks, data.section),
        "<h2>Per-class metrics (background excluded)</h2>",
        f"<p>Every metric here is scored at each image's original size, "
        f"on the masks <code>flexunet infer</code> writes "
        f"(probabilities resized, then thresholded). Dice, IoU, precision and recall are pooled over all pixels of the "
        f"split (true/false positives and false negatives summed over images). In brackets: {interval_sentence(data)}. "
        f"HD95 is the 95th-percentile symmetric boundary "
        f"distance in original-size pixels, averaged over images that have the class in their truth or prediction; an "
        f"image with the class in only one of them (one-sided) counts as that image's diagonal.</p>",
        per_class_table(data.per_class),
        folds_section(data.folds),
        postprocess_section(data.postprocess),
        "<h2>Objects</h2><p>Objects are the connected components of each class (8-connected) in truth and prediction; "
        "predictions are split by watershed where <code>[postprocess] separate</code> says so. A true and a predicted "
        "object match at IoU &ge; 0.5. Precision, recall, F1, SQ (mean IoU of the matches) and PQ = SQ &times; RQ "
        "(RQ = F1) are pooled over all images; the count error is the mean over images of |predicted &minus; true| "
        "objects, the count ratio predicted / true objects. Intervals as above.</p>" + object_table(data.per_class)
        if object_table(data.per_class) else "",
        "<h2>The seed's own metrics (for comparison only)</h2>",
        "<p>These are the numbers the original Keras tool reported, computed its way: soft (no threshold), pooled per "
        "batch, and some count the background, which inflates them on small objects. They are not comparable with the "
        "table above; quote that one.</p>",
        seed_table(data.seed_metrics, data.loss_name, data.loss),
        "<h2>Per-image Dice</h2>",
        f'<img alt="per-image Dice histogram" src="{histogram}">' if histogram else "<p>No images.</p>",
        f"<h2>The {e(len(data.worst))} worst images</h2>",
        error_legend() if data.worst or data.best else "",
        examples_table(data.worst, data.settings, "worst"),
        f"<h2>Objects in the {e(len(data.worst))} worst images</h2>" + objects_table(data.worst, data.settings, applied)
        if data.worst and data.per_class and "object_f1" in next(iter(data.per_class.values())) else "",
        f"<h2>The {e(len(data.best))} best images</h2>" if data.best else "",
        examples_table(data.best, data.settings, "best") if data.best else "",
        confusion,
        "<h2>Training curves</h2>",
        curves,
        provenance_sections(data),
        "<h2>Files</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in data.files) + "</ul>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _applied(data: ReportData) -> PostprocessSettings:
    """The postprocessing the evaluation applied (its watershed separation draws the predicted objects)."""
    from flexunet.postprocess import settings_from_config

    record = data.postprocess or {}
    chosen = record.get("choice")
    picks = {name: entry["choice"] for name, entry in chosen.get("classes", {}).items()} if chosen else None
    return settings_from_config(data.cfg, picks)


def write_report(path: Path, data: ReportData) -> Path:
    """Render and write report.html atomically (a reader never sees half a page)."""
    atomic_write_text(path, render_report(data))
    return path
