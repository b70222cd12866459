"""report.html pieces: row-normalised confusion matrix, escaping, the leakage verdict from a doctor report."""
from __future__ import annotations

import itertools
import re
from types import SimpleNamespace

import numpy as np
import torch

from flexunet.evaluate import Example
from flexunet.evaluate.leakage import summarise_doctor
from flexunet.evaluate.figures import ERROR_COLOURS, error_labels, error_panel
from flexunet.evaluate.report import summary_sentence
from flexunet.evaluate.sections import confusion_table, e, error_legend, per_class_table


def test_confusion_table_is_row_normalised_with_pixel_counts() -> None:
    page = confusion_table(torch.tensor([[90, 10, 0], [5, 15, 0], [0, 0, 0]]), ["background", "cytoplasm", "nucleus"])
    assert "0.900" in page and "0.100" in page and "0.250" in page and "0.750" in page
    assert "90 px" in page and "0: background" in page and "2: nucleus" in page and "<th>cytoplasm</th>" in page
    assert page.count("<tr>") == 4  # header + one row per true label, an empty row included


def test_every_value_is_escaped() -> None:
    assert e('<img src=x onerror="alert(1)">') == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
    page = per_class_table({"<b>cls</b>": {"dice": 0.5, "iou": 1 / 3, "precision": 0.5, "recall": 0.5}})
    assert "<b>" not in page and "&lt;b&gt;cls&lt;/b&gt;" in page and "0.3333" in page


def test_doctor_verdict_for_the_evaluated_split() -> None:
    report = {
        "splits": {"train": {"pairs": 10}, "valid": {"pairs": 4}, "test": {"pairs": 5}},
        "near_duplicates": [
            {"image": "t1", "split": "test", "match": "a", "match_split": "train"},
            {"image": "t1", "split": "test", "match": "b", "match_split": "valid"},
            {"image": "t2", "split": "test", "match": "c", "match_split": "train"},
        ],
        "problems": ["valid: 1 of 4 images are near-copies of images in train"],
        "exact_duplicates": [],
    }
    leaks = summarise_doctor(report, "test", "doctor.json")
    assert leaks.status == "leak" and leaks.lines[0].startswith("2 of 5 test images are near-copies")
    assert "of images in train and valid" in leaks.lines[0] and leaks.lines[1].startswith("valid: 1 of 4")
    clean = summarise_doctor({"splits": {"test": {"pairs": 5}}, "near_duplicates": []}, "test", "doctor.json")
    assert clean.status == "clean" and clean.lines[0].startswith("0 of 5 test images")


# Machado, Oliveira & Fernandes (2009) full-severity dichromacy matrices, applied in linear RGB.
DICHROMACY = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def simulate(rgb: tuple[int, int, int], matrix: list[list[float]]) -> np.ndarray:
    """The sRGB colour (0..255) a dichromat sees in place of `rgb`."""
    c = np.array(rgb) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    seen = np.clip(np.array(matrix) @ linear, 0, 1)
    return 255 * np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def test_error_labels_by_hand() -> None:
    truth = np.array([[0, 1, 1, 2, 0, 2]], np.uint8)
    pred = np.array([[0, 1, 0, 1, 2, 2]], np.uint8)
    # background, TP, missed, wrong class (a miss of class 2), FP, TP
    assert error_labels(truth, pred).tolist() == [[0, 1, 3, 3, 2, 1]]


def test_error_panel_paints_three_distinct_colours_on_grey() -> None:
    image = np.zeros((1, 4, 3), np.uint8)
    image[..., 0] = 200  # a red image: the panel must drop its hue
    panel = error_panel(image, np.array([[0, 1, 1, 0]], np.uint8), np.array([[0, 1, 0, 1]], np.uint8))
    tp, fp, fn = (tuple(c) for c in ERROR_COLOURS.values())
    assert [tuple(p) for p in panel[0, 1:]] == [tp, fn, fp]
    assert len(set(panel[0, 0])) == 1  # untouched pixel: grey
    for kind, matrix in DICHROMACY.items():  # still far apart for colour-blind eyes
        seen = [simulate(c, matrix) for c in (tp, fp, fn)]
        assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(seen, 2)) > 120, kind
    legend = error_legend()
    assert all(f"rgb{c}" in legend for c in ERROR_COLOURS.values()) and "false negative" in legend


def test_summary_sentence_comes_from_the_numbers() -> None:
    worst = Example("cell_0007.png", 0.4149, np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), np.zeros((2, 2)))
    second = Example("cell_0001.png", 0.52, worst.image, worst.labels, worst.pred)
    data = SimpleNamespace(images=24, section="test", worst=[worst, second], per_class={
        "cytoplasm": {"dice": 0.9132, "dice_ci_low": 0.9, "dice_ci_high": 0.925},
        "nucleus": {"dice": 0.8123, "dice_ci_low": 0.7512, "dice_ci_high": 0.8611}})
    assert summary_sentence(data) == ("On 24 test images the model outlines cytoplasm with a Dice of 0.91 (95% CI "
                                      "0.90–0.93) and nucleus with a Dice of 0.81 (95% CI 0.75–0.86); its weakest image "
                                      "is cell_0007.png (Dice 0.41).")
    empty = SimpleNamespace(images=3, section="valid", worst=[], per_class={"lesion": {"dice": float("nan")}})
    assert summary_sentence(empty) == ("On 3 images (on [valid], not held out) the model outlines lesion with no Dice "
                                       "(absent from truth and prediction).")
    one = SimpleNamespace(images=1, section="test", worst=[], per_class={"lesion": {"dice": float("nan")}})
    assert summary_sentence(one).startswith("On 1 test image the model")  # was "On 1 test images"
def _report_data(cfg, training=None, resampling=None):
    import numpy as np

    from flexunet.evaluate.leakage import LeakSummary
    from flexunet.evaluate.report import ReportData
    from flexunet.evaluate.settings import EvalSettings

    return ReportData(cfg=cfg, settings=EvalSettings.from_config(cfg), section="test", checkpoint="best.pt", images=260, loss_name="loss", loss=0.0,
                      per_class={}, per_image_dice=np.zeros((0, 1)), seed_metrics={}, confusion=None, worst=[],
                      best=[], leaks=LeakSummary("not checked", (), ""), history=[], curve_pngs=(), files=(),
                      resamples=1000, seed=0, resampling=resampling, training=training)


def test_interval_names_the_resampled_unit() -> None:
    from flexunet.config import config_from_dict
    from flexunet.evaluate.groups import image_resampling
    from flexunet.evaluate.report import interval_sentence

    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32}})
    grouped = image_resampling([f"{p}cell{i}" for i in range(20) for p in ("", "flipped_", "rotated_90_")])
    assert "over 20 source groups" in interval_sentence(_report_data(cfg, resampling=grouped))
    assert "not independent images" in interval_sentence(_report_data(cfg, resampling=grouped))
    assert "over 260 images</span>" in interval_sentence(_report_data(cfg))


def test_an_old_checkpoint_shows_values_with_origin_not_recorded() -> None:
    from flexunet.config import config_from_dict
    from flexunet.runs.checkpoint import TrainingConfig
    from flexunet.evaluate.report import provenance_sections

    trained = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "train": {"epochs": 3}})
    evaluated = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "train": {"epochs": 100}})
    page = provenance_sections(_report_data(evaluated, TrainingConfig(trained.model_copy(update={"origins": {}}), False)))
    training = page[:page.index('<div id="evaluation-config">')]
    assert "predates stored origins" in training and "origin-default\">not recorded</td>" in training
    assert "<td class=\"name\">epochs</td><td class=\"name\"><code>3</code>" in training
    assert re.search(r'data-key="train.epochs">.*?<code>3</code>.*?<code>100</code>.*?file', page)
