"""The tables and sections of report.html, each a string of escaped HTML: per-class numbers with intervals, the seed's
metrics, confusion matrix, examples, objects, folds, postprocessing, the configs."""
from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from flexunet.config.schema import SECTIONS, Config
from flexunet.console import plural
from flexunet.evaluate.figures import ERROR_COLOURS, ERROR_MEANINGS, example_png, objects_png, png_data_uri
from flexunet.evaluate.provenance import origin_of
from flexunet.evaluate.settings import EvalSettings
from flexunet.postprocess import PostprocessSettings


def e(value: object) -> str:
    """Escaped text of any value: the only way a value reaches the page."""
    return html.escape(str(value), quote=True)


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


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


def objects_table(examples: Sequence, settings: EvalSettings, postprocess: PostprocessSettings) -> str:
    """The worst images' objects: true and predicted outlines, one colour per object, with the count of each."""
    if not examples:
        return ""
    rows = []
    for x in examples:
        png, true_count, pred_count = objects_png(x, settings, postprocess)
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
        value = f"{threshold['value']:g}"
        text += (f'<p id="threshold-choice">Foreground probability threshold {e(value)}, chosen '
                 f'automatically on the {e(choice.get("split", "validation"))} predictions among '
                 f'{e(threshold.get("tried", ""))} values by pooled Dice ({before} at the configured threshold, '
                 f'{after} at the chosen one).</p>')
    if choice:
        rows = "".join(f'<tr data-class="{e(name)}"><td class="name">{e(name)}</td>'
                       f'<td class="name">{e(entry.get("described", ""))}</td>'
                       f'<td>{e(fmt(entry.get("dice_before", math.nan)))}</td>'
                       f'<td>{e(fmt(entry.get("dice_after", math.nan)))}</td></tr>'
                       for name, entry in choice.get("classes", {}).items())
        split = choice.get("split", "validation")
        where = "out-of-fold predictions of" if split == "out-of-fold" else f"{split} split with"
        text += (f"<p>Chosen automatically (<code>auto = True</code>) on the {e(where)} "
                 f"{e(choice.get('checkpoint', 'the best checkpoint'))}, among "
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


def examples_table(examples: Sequence, settings: EvalSettings, table_id: str) -> str:
    if not examples:
        return "<p>No image with a foreground class in its truth or prediction.</p>"
    rows = [f'<tr><td>{e(x.name)}<br>Dice {e(fmt(x.score))}</td>'
            f'<td><img alt="{e(x.name)}: image, truth, prediction, errors" '
            f'src="{png_data_uri(example_png(x, settings))}"></td></tr>'
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
