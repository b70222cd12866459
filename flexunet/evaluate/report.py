"""report.html: one self-contained page (inline CSS, images as base64 PNG, no script, no network) that a person reads
to decide whether an evaluation can be trusted: honest per-class numbers with error bars, the worst images, the
training curves, the config that produced them, and whether the test images leak from train.

Every value shown passes through `html.escape`; the page is built from plain string templates.
"""
from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries
from torch import Tensor

from flexunet.config.schema import SECTIONS, Config
from flexunet.console import plural
from flexunet.evaluate.groups import UNIT_GROUPS, Resampling
from flexunet.evaluate.leakage import LeakSummary
from flexunet.evaluate.provenance import origin_of
from flexunet.files import atomic_write_text
from flexunet.labels import LabelSpace, overlay
from flexunet.postprocess import PostprocessSettings, instance_labels
from flexunet.runs.checkpoint import TrainingConfig

# The error panel's colours, from Okabe & Ito's colour-blind-safe palette: blue, yellow and vermillion stay far apart
# under simulated protanopia, deuteranopia and tritanopia (tests/unit/test_report_render.py checks it).
ERROR_COLOURS = {"true positive": (0, 114, 178), "false positive": (240, 228, 66), "false negative": (213, 94, 0)}
ERROR_MEANINGS = {"true positive": "foreground given its true class",
                  "false positive": "foreground predicted where the truth is background",
                  "false negative": "foreground missed, or given another class"}

# How each seed metric is computed, shown beside its value so nobody quotes it as the Dice above.
SEED_CAVEATS = {
    "dice_coef": "soft (probabilities, no threshold), pooled over each batch, +1 smoothing; mean over batches",
    "iou_coef": "soft (probabilities, no threshold), pooled over each batch; mean over batches",
    "jacard_similarity": "soft (probabilities, no threshold), pooled over each batch; mean over batches",
    "dice_coef_multiclass": "soft, over every channel: a multi-class model's background channel counts, so it "
                            "reads near 1 whatever happens to small objects",
    "binary_accuracy": "pixel accuracy over every channel, background included: high even for an empty prediction",
    "accuracy": "pixel accuracy over every channel, background included: high even for an empty prediction",
    "sensitivity": "recall of rounded probabilities, pooled over each batch; mean over batches",
    "specificity": "background recall: near 1 whenever the background is large",
}

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


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, computed before rendering so the renderer stays a pure function."""

    cfg: Config
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


def e(value: object) -> str:
    """Escaped text of any value: the only way a value reaches the page."""
    return html.escape(str(value), quote=True)


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buffer.tobytes() if ok else b""


def figure_png(draw, width: float = 7.0, height: float = 3.2) -> bytes:
    """PNG of a matplotlib figure drawn by `draw(fig)`: Agg canvas, no pyplot, so no global backend is touched."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    draw(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def dice_histogram_png(per_image_dice: np.ndarray, names: Sequence[str]) -> bytes:
    """Histogram of per-image Dice, one series per foreground class (images where the class is undefined left out)."""
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        for k, name in enumerate(names):
            values = per_image_dice[:, k][~np.isnan(per_image_dice[:, k])]
            ax.hist(values, bins=np.linspace(0, 1, 21), alpha=0.6, label=f"{name} ({len(values)} images)")
        ax.set_xlabel("per-image Dice")
        ax.set_ylabel("images")
        ax.set_xlim(0, 1)
        ax.legend(loc="upper left")
        ax.grid(True, alpha=0.3)
    return figure_png(draw)


def curves_png(history: list[dict[str, float]]) -> bytes:
    """Losses, then the validation Dice/IoU and the learning rate, against the epoch."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]  # numbered from 1 in history.csv

    def draw(fig) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for column, colour in (("loss", "green"), ("val_loss", "red")):
            left.plot(epochs, [r.get(column, math.nan) for r in history], "o--", color=colour, label=column, ms=3)
        left.set_xlabel("epoch")
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.legend()
        left.grid(True, alpha=0.3)
        for column in ("val_dice", "val_iou"):
            if any(column in r for r in history):
                right.plot(epochs, [r.get(column, math.nan) for r in history], "o-", label=column, ms=3)
        right.set_xlabel("epoch")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylim(0, 1)
        right.grid(True, alpha=0.3)
        if any("lr" in r for r in history):
            lr = right.twinx()
            lr.plot(epochs, [r.get("lr", math.nan) for r in history], ":", color="grey", label="lr")
            lr.set_yscale("log")
            lr.set_ylabel("learning rate")
        right.legend(loc="lower right")
    return figure_png(draw, 9.0, 3.2)


def read_history(eval_dir: Path) -> list[dict[str, float]]:
    """Rows of history.csv as floats; empty when the run folder has none."""
    path = Path(eval_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return [{k: float(v) for k, v in r.items() if k and v not in (None, "")} for r in rows]
    except ValueError:
        return []


def error_labels(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W): 0 background in both, 1 true positive, 2 false positive, 3 false negative (see ERROR_MEANINGS)."""
    errors = np.zeros(truth.shape, np.uint8)
    errors[(truth > 0) & (pred == truth)] = 1
    errors[(truth == 0) & (pred > 0)] = 2
    errors[(truth > 0) & (pred != truth)] = 3
    return errors


def error_panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The image in dimmed grey with every error class painted solid (no blending: a 1-pixel miss stays visible)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) // 3 + 64  # (H, W) in 64..149: no hue, darker than the yellow
    panel = np.repeat(grey[..., None], 3, axis=2)
    errors = error_labels(truth, pred)
    colours = np.array([(0, 0, 0), *ERROR_COLOURS.values()], np.uint8)
    panel[errors > 0] = colours[errors[errors > 0]]
    return panel


def example_png(example, cfg: Config) -> bytes:
    """image | truth overlay | prediction overlay | errors, side by side (RGB)."""
    image = example.image if example.image.shape[2] != 1 else np.repeat(example.image, 3, axis=2)
    image = image[..., ::-1] if cfg.image.color_order == "BGR" else image  # the network's order -> display RGB
    colours = LabelSpace.from_config(cfg).overlay_colours()
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panels = [image, gap, overlay(image, example.labels, colours, 0.45),
              gap, overlay(image, example.pred, colours, 0.45),
              gap, error_panel(np.ascontiguousarray(image), example.labels, example.pred)]
    return encode_png(np.ascontiguousarray(np.concatenate(panels, axis=1)))


# Outline colours of numbered objects (Okabe & Ito, without black): neighbouring objects get different colours.
OBJECT_COLOURS = np.array([(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                           (213, 94, 0), (204, 121, 167)], np.uint8)


def object_outlines(image: np.ndarray, labels: np.ndarray, postprocess: PostprocessSettings,
                    num_labels: int) -> np.ndarray:
    """The image in dimmed grey with each object's outline in its own colour: touching objects stay apart."""
    instances, _ = instance_labels(labels, postprocess, num_labels)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) // 3 + 64
    panel = np.repeat(grey[..., None], 3, axis=2)
    edges = find_boundaries(instances, mode="inner")
    panel[edges] = OBJECT_COLOURS[(instances[edges] - 1) % len(OBJECT_COLOURS)]
    return panel


def objects_png(example, cfg: Config, postprocess: PostprocessSettings) -> tuple[bytes, int, int]:
    """(truth outlines | prediction outlines PNG, true objects, predicted objects) of one example image."""
    image = example.image if example.image.shape[2] != 1 else np.repeat(example.image, 3, axis=2)
    image = np.ascontiguousarray(image[..., ::-1] if cfg.image.color_order == "BGR" else image)
    num_labels = LabelSpace.from_config(cfg).num_labels
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    truth = object_outlines(image, example.labels, {}, num_labels)
    pred = object_outlines(image, example.pred, postprocess, num_labels)
    counts = [int(instance_labels(lab, pp, num_labels)[0].max())
              for lab, pp in ((example.labels, {}), (example.pred, postprocess))]
    return encode_png(np.concatenate([truth, gap, pred], axis=1)), counts[0], counts[1]


def objects_table(examples: Sequence, cfg: Config, postprocess: PostprocessSettings) -> str:
    """The worst images' objects: true and predicted outlines, one colour per object, with the count of each."""
    if not examples:
        return ""
    rows = []
    for x in examples:
        png, true_count, pred_count = objects_png(x, cfg, postprocess)
        rows.append(f'<tr data-image="{e(x.name)}"><td>{e(x.name)}<br>true objects <strong class="true-count">'
                    f'{e(true_count)}</strong><br>predicted objects <strong class="pred-count">{e(pred_count)}'
                    f'</strong></td><td><img alt="{e(x.name)}: true and predicted objects" '
                    f'src="{png_data_uri(png)}"></td></tr>')
    return (f'<table class="examples" id="worst-objects"><tr><th class="name">image</th>'
            f'<th class="name">true objects | predicted objects (one outline colour per object)</th></tr>'
            f'{"".join(rows)}</table>')


OBJECT_COLUMNS = (("object_precision", "precision"), ("object_recall", "recall"), ("object_f1", "F1"),
                  ("sq", "SQ"), ("pq", "PQ"), ("count_mae", "count error / image"), ("count_ratio", "count ratio"))


def object_table(per_class: dict[str, dict[str, float]]) -> str:
    """Object-level numbers per class, with the same intervals as the pixel metrics."""
    if not per_class or "object_f1" not in next(iter(per_class.values())):
        return ""
    head = ('<tr><th class="name">class</th><th>true objects</th><th>predicted objects</th>'
            + "".join(f"<th>{e(label)}</th>" for _, label in OBJECT_COLUMNS) + "</tr>")
    rows = []
    for name, v in per_class.items():
        cells = [f'<td class="name">{e(name)}</td>', f'<td>{e(v.get("true_objects", ""))}</td>',
                 f'<td>{e(v.get("predicted_objects", ""))}</td>']
        cells += [f'<td data-metric="{m}" data-value="{e(fmt(v.get(m, math.nan)))}">{_with_ci(v, m, 3)}</td>'
                  for m, _ in OBJECT_COLUMNS]
        rows.append(f'<tr data-class="{e(name)}">{"".join(cells)}</tr>')
    return f'<table id="objects">{head}{"".join(rows)}</table>'


def folds_section(folds: list[dict] | None) -> str:
    """Out of fold: each fold's model, how many held-out images it scored, and its pooled Dice per class."""
    if not folds:
        return ""
    names = list(folds[0].get("dice", {}))
    head = "".join(f"<th>Dice {e(n)}</th>" for n in names)
    rows = "".join(f'<tr data-fold="{e(f["fold"])}"><td>{e(f["fold"])}</td><td class="name">{e(f["checkpoint"])}</td>'
                   f'<td>{e(f["images"])}</td>' + "".join(f"<td>{e(fmt(f['dice'].get(n, math.nan)))}</td>"
                                                         for n in names) + "</tr>" for f in folds)
    return ("<h2>Folds</h2><p>Each image above was scored by the model of the fold that held its source group out; "
            "per fold, the images it scored and their pooled Dice:</p>"
            f'<table id="folds"><tr><th>fold</th><th class="name">checkpoint</th><th>images</th>{head}</tr>{rows}'
            "</table>")


def postprocess_section(record: dict | None) -> str:
    """What [postprocess] did per class and, with auto, what validation chose and the Dice before and after."""
    if record is None:
        return ""
    applied = record.get("classes") or {}
    separate = record.get("separate") or {}
    lines = [f"<li><strong>{e(name)}</strong>: {e(what)}"
             + (f"; touching objects separated by {e(separate[name])}" if name in separate else "") + "</li>"
             for name, what in applied.items()]
    text = "<ul>" + "".join(lines) + "</ul>" if lines else "<p>None: the masks are the thresholded predictions.</p>"
    choice = record.get("choice") or {}
    threshold = choice.get("threshold")
    if threshold:
        before, after = (e(fmt(threshold.get(key, math.nan))) for key in ("dice_before", "dice_after"))
        text += (f'<p id="threshold-choice">Foreground probability threshold {e(fmt(threshold["value"]))}, chosen '
                 f'automatically on the {e(choice.get("split", "validation"))} predictions among '
                 f'{e(threshold.get("tried", ""))} values by pooled Dice ({before} at the configured threshold, '
                 f'{after} at the chosen one).</p>')
    if choice:
        rows = "".join(f'<tr data-class="{e(name)}"><td class="name">{e(name)}</td>'
                       f'<td class="name">{e(entry.get("described", ""))}</td>'
                       f'<td>{e(fmt(entry.get("dice_before", math.nan)))}</td>'
                       f'<td>{e(fmt(entry.get("dice_after", math.nan)))}</td></tr>'
                       for name, entry in choice.get("classes", {}).items())
        text += (f"<p>Chosen automatically (<code>auto = True</code>) on the {e(choice.get('split', 'validation'))} "
                 f"split with {e(choice.get('checkpoint', 'the best checkpoint'))}, among "
                 f"{e(choice.get('tried', ''))} combinations per class, by pooled Dice on those images (ties keep "
                 "the simpler choice):</p>"
                 '<table id="postprocess-choice"><tr><th class="name">class</th><th class="name">chosen</th>'
                 f"<th>Dice before</th><th>after</th></tr>{rows}</table>")
    return f'<h2>Postprocessing</h2><div id="postprocess">{text}</div>'


def error_legend() -> str:
    """What the colours of the errors panel mean."""
    items = "".join(f'<span class="swatch" style="background: rgb{colour}"></span><strong>{e(name)}</strong>: '
                    f"{e(ERROR_MEANINGS[name])}" for name, colour in ERROR_COLOURS.items())
    return f'<p id="error-legend">Errors panel (fourth):{items}.</p>'


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


def _with_ci(values: dict[str, float], metric: str, digits: int = 4) -> str:
    main = f"{e(fmt(values.get(metric, math.nan), digits))}"
    if f"{metric}_ci_low" in values:
        low, high = fmt(values[f"{metric}_ci_low"], digits), fmt(values[f"{metric}_ci_high"], digits)
        main += f' <span class="ci">[{e(low)}, {e(high)}]</span>'
    return main


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    head = ("<tr><th class=\"name\">class</th><th>images with class</th><th>Dice</th><th>IoU</th><th>precision</th>"
            "<th>recall</th><th>HD95 (px)</th><th>HD95 one-sided</th><th>mean per-image Dice</th></tr>")
    rows = []
    for name, v in per_class.items():
        cells = [f'<td class="name">{e(name)}</td>', f'<td>{e(v.get("images_with_class", ""))}</td>']
        cells += [f'<td data-metric="{m}" data-value="{e(fmt(v.get(m, math.nan)))}">{_with_ci(v, m)}</td>'
                  for m in ("dice", "iou", "precision", "recall")]
        cells.append(f'<td data-metric="hd95" data-value="{e(fmt(v.get("hd95", math.nan), 2))}">'
                     f'{_with_ci(v, "hd95", 2)}</td>')
        cells.append(f'<td>{e(v.get("hd95_one_sided", "n/a"))}</td>')
        cells.append(f'<td data-metric="dice_image_mean">{_with_ci(v, "dice_image_mean")}</td>')
        rows.append(f'<tr data-class="{e(name)}">{"".join(cells)}</tr>')
    return f'<table id="per-class">{head}{"".join(rows)}</table>'


_SEED_CAVEAT = "the seed formula; not comparable with the table above"


def seed_table(seed_metrics: dict[str, float], loss_name: str, loss: float) -> str:
    rows = [f'<tr><td class="name">{e(loss_name)} (loss)</td><td>{e(fmt(loss))}</td>'
            '<td class="name">the configured loss</td></tr>']
    rows += [f'<tr><td class="name">{e(name)}</td><td>{e(fmt(value))}</td>'
             f'<td class="name">{e(SEED_CAVEATS.get(name, _SEED_CAVEAT))}</td></tr>'
             for name, value in seed_metrics.items()]
    return ('<table id="seed-metrics" class="seed"><tr><th class="name">seed metric</th><th>value</th>'
            f'<th class="name">how the seed computed it</th></tr>{"".join(rows)}</table>')


def confusion_table(confusion: Tensor, names: Sequence[str]) -> str:
    """Pixel counts with the row-normalised share (recall of each true label along the diagonal), shaded by share."""
    counts = confusion.double().numpy()
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = counts.shape[0]
    head = ("<tr><th class=\"name\">true \\ predicted</th>" + "".join(f"<th>{e(names[i])}</th>" for i in range(k))
            + "</tr>")
    rows = []
    for i in range(k):
        cells = [f'<td class="name">{e(i)}: {e(names[i])}</td>']
        for j in range(k):
            shade = int(255 - 120 * shares[i, j])
            cells.append(f'<td style="background: rgb({shade},{shade},255)">{e(f"{shares[i, j]:.3f}")}'
                         f'<br><span class="ci">{e(f"{int(counts[i, j]):,}")} px</span></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="confusion">{head}{"".join(rows)}</table>'


def examples_table(examples: Sequence, cfg: Config, table_id: str) -> str:
    if not examples:
        return "<p>No image with a foreground class in its truth or prediction.</p>"
    rows = [f'<tr><td>{e(x.name)}<br>Dice {e(fmt(x.score))}</td>'
            f'<td><img alt="{e(x.name)}: image, truth, prediction, errors" '
            f'src="{png_data_uri(example_png(x, cfg))}"></td></tr>'
            for x in examples]
    return (f'<table class="examples" id="{e(table_id)}"><tr><th class="name">image</th>'
            f'<th class="name">image | truth | prediction | errors</th></tr>{"".join(rows)}</table>')


def config_tables(cfg: Config, origins_recorded: bool = True) -> str:
    """Each section's keys set by the user (file or --set) in a table, its defaults folded below it. Without
    `origins_recorded` (a checkpoint older than origins) every value is shown, its origin "not recorded"."""
    parts = []
    for name in SECTIONS:
        rows: dict[bool, list[str]] = {True: [], False: []}
        for key, value in getattr(cfg, name).model_dump().items():
            origin = origin_of(cfg, f"{name}.{key}", origins_recorded)
            css = {"file": "origin-file", "command line": "origin-command"}.get(origin, "origin-default")
            rows[origin != "default"].append(
                f'<tr><td class="name">{e(key)}</td><td class="name"><code>{e(repr(value))}</code></td>'
                f'<td class="name {css}">{e(origin)}</td></tr>')
        head = '<tr><th class="name">key</th><th class="name">value</th><th class="name">from</th></tr>'
        count = len(rows[False])
        at_default = f"{count} {plural(count, 'key')} at {'its default' if count == 1 else 'their defaults'}"
        defaults = (f'<details><summary>{at_default}</summary>'
                    f'<table class="config">{head}{"".join(rows[False])}</table></details>') if rows[False] else ""
        if rows[True]:
            parts.append(f'<h3>[{e(name)}]</h3><table class="config" data-section="{e(name)}">{head}'
                         f'{"".join(rows[True])}</table>{defaults}')
        elif rows[False]:
            parts.append(f"<details><summary>[{e(name)}]: {'' if count == 1 else 'all '}{at_default}</summary>"
                         f'<table class="config" data-section="{e(name)}">{head}{"".join(rows[False])}</table>'
                         "</details>")
    return "".join(parts)


def config_differences(trained: Config, evaluation: Config) -> str:
    """The keys whose evaluation value differs from the training value, with where the evaluation's came from."""
    rows = []
    for name in SECTIONS:
        before, now = getattr(trained, name).model_dump(), getattr(evaluation, name).model_dump()
        for key, value in now.items():
            if before.get(key) != value:
                origin = origin_of(evaluation, f"{name}.{key}")
                rows.append(f'<tr data-key="{e(name)}.{e(key)}"><td class="name">[{e(name)}] {e(key)}</td>'
                            f'<td class="name"><code>{e(repr(before.get(key)))}</code></td>'
                            f'<td class="name"><code>{e(repr(value))}</code></td>'
                            f'<td class="name">{e(origin)}</td></tr>')
    if not rows:
        return "<p>The evaluation's config holds the same values as the training config.</p>"
    return ('<table id="config-differences"><tr><th class="name">key</th><th class="name">trained with</th>'
            f'<th class="name">evaluated with</th><th class="name">from</th></tr>{"".join(rows)}</table>')


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
        examples_table(data.worst, cfg, "worst"),
        f"<h2>Objects in the {e(len(data.worst))} worst images</h2>" + objects_table(data.worst, cfg, applied)
        if data.worst and data.per_class and "object_f1" in next(iter(data.per_class.values())) else "",
        f"<h2>The {e(len(data.best))} best images</h2>" if data.best else "",
        examples_table(data.best, cfg, "best") if data.best else "",
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
