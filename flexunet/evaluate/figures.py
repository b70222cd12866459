"""The pictures of report.html: PNG encoding, matplotlib figures (Dice histogram, training curves), the error panel in a
colour-blind-safe palette, object outlines."""
from __future__ import annotations

import base64
import csv
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

from flexunet.evaluate.settings import EvalSettings
from flexunet.labels import overlay
from flexunet.postprocess import PostprocessSettings, instance_labels

# The error panel's colours, from Okabe & Ito's colour-blind-safe palette: blue, yellow and vermillion stay far apart
# under simulated protanopia, deuteranopia and tritanopia (tests/unit/test_report_render.py checks it).
ERROR_COLOURS = {"true positive": (0, 114, 178), "false positive": (240, 228, 66), "false negative": (213, 94, 0)}


ERROR_MEANINGS = {"true positive": "foreground given its true class",
                  "false positive": "foreground predicted where the truth is background",
                  "false negative": "foreground missed, or given another class"}


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


def example_png(example, settings: EvalSettings) -> bytes:
    """image | truth overlay | prediction overlay | errors, side by side (RGB)."""
    image = example.image if example.image.shape[2] != 1 else np.repeat(example.image, 3, axis=2)
    image = image[..., ::-1] if settings.color_order == "BGR" else image  # the network's order -> display RGB
    colours = settings.space.overlay_colours()
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


def objects_png(example, settings: EvalSettings, postprocess: PostprocessSettings) -> tuple[bytes, int, int]:
    """(truth outlines | prediction outlines PNG, true objects, predicted objects) of one example image."""
    image = example.image if example.image.shape[2] != 1 else np.repeat(example.image, 3, axis=2)
    image = np.ascontiguousarray(image[..., ::-1] if settings.color_order == "BGR" else image)
    num_labels = settings.space.num_labels
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    truth = object_outlines(image, example.labels, {}, num_labels)
    pred = object_outlines(image, example.pred, postprocess, num_labels)
    counts = [int(instance_labels(lab, pp, num_labels)[0].max())
              for lab, pp in ((example.labels, {}), (example.pred, postprocess))]
    return encode_png(np.concatenate([truth, gap, pred], axis=1)), counts[0], counts[1]
