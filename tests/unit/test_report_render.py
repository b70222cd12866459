"""report.html pieces: row-normalised confusion matrix, escaping, the leakage verdict from a doctor report."""
from __future__ import annotations

import re

import torch

from flexunet.evaluate.leakage import summarise_doctor
from flexunet.evaluate.report import confusion_table, e, per_class_table


def test_confusion_table_is_row_normalised_with_pixel_counts() -> None:
    page = confusion_table(torch.tensor([[90, 10, 0], [5, 15, 0], [0, 0, 0]]))
    assert "0.900" in page and "0.100" in page and "0.250" in page and "0.750" in page
    assert "90 px" in page and "(background)" in page
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


def _report_data(cfg, training=None, resampling=None):
    import numpy as np

    from flexunet.evaluate.leakage import LeakSummary
    from flexunet.evaluate.report import ReportData

    return ReportData(cfg, "test", "best.pt", 260, "loss", 0.0, {}, np.zeros((0, 1)), {}, None, [], [],
                      LeakSummary("not checked", (), ""), [], (), (), 1000, 0, resampling, training)


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
    from flexunet.evaluate.provenance import TrainingConfig
    from flexunet.evaluate.report import provenance_sections

    trained = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "train": {"epochs": 3}})
    evaluated = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "train": {"epochs": 100}})
    page = provenance_sections(_report_data(evaluated, TrainingConfig(trained.model_copy(update={"origins": {}}), False)))
    training = page[:page.index('<div id="evaluation-config">')]
    assert "predates stored origins" in training and "origin-default\">not recorded</td>" in training
    assert "<td class=\"name\">epochs</td><td class=\"name\"><code>3</code>" in training
    assert re.search(r'data-key="train.epochs">.*?<code>3</code>.*?<code>100</code>.*?file', page)
