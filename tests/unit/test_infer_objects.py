"""objects.csv rows, counts and instance PNGs of hand-built label maps."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from flexunet.errors import DataError
from flexunet.infer.objects import ObjectTable, image_objects, instance_png
from flexunet.postprocess import ClassPostprocess


def test_rows_measure_each_object() -> None:
    labels = np.zeros((10, 12), np.int64)
    labels[1:3, 1:4] = 1  # 6 px, centroid (1.5, 2)
    labels[6:9, 8:10] = 2  # 6 px
    probs = np.zeros((3, 10, 12), np.float32)
    probs[0] = 1.0
    probs[1, 1:3, 1:4], probs[0, 1:3, 1:4] = 0.8, 0.2
    probs[2, 6:9, 8:10], probs[0, 6:9, 8:10] = 0.6, 0.4
    found = image_objects("a.png", labels, probs, {}, ["background", "nucleus", "cytoplasm"])
    assert found.counts == {"nucleus": 1, "cytoplasm": 1}
    first, second = found.rows
    assert (first["class"], first["area_px"], first["centroid_y"], first["centroid_x"]) == ("nucleus", 6, 1.5, 2.0)
    assert (first["bbox_min_row"], first["bbox_min_col"], first["bbox_max_row"], first["bbox_max_col"]) == (1, 1, 3, 4)
    assert first["mean_probability"] == pytest.approx(0.8)
    assert second["class"] == "cytoplasm" and second["mean_probability"] == pytest.approx(0.6)
    assert set(np.unique(found.instances)) == {0, 1, 2}


def test_binary_probability_and_watershed_counts() -> None:
    yy, xx = np.mgrid[:40, :60]
    labels = (((yy - 20) ** 2 + (xx - 18) ** 2 <= 100) | ((yy - 20) ** 2 + (xx - 38) ** 2 <= 100)).astype(np.int64)
    probs = np.where(labels > 0, 0.9, 0.1).astype(np.float32)[None]
    plain = image_objects("b", labels, probs, {}, ["background", "cell"])
    split = image_objects("b", labels, probs, {1: ClassPostprocess(separate="watershed")}, ["background", "cell"])
    assert plain.counts == {"cell": 1} and split.counts == {"cell": 2}
    assert all(r["mean_probability"] == pytest.approx(0.9) for r in split.rows)


def test_empty_mask_and_table_files(tmp_path: Path) -> None:
    table = ObjectTable(["background", "cell"])
    table.add("empty.png", image_objects("empty.png", np.zeros((5, 5), np.int64), None, {}, ["background", "cell"]))
    labels = np.zeros((5, 5), np.int64)
    labels[0, 0] = labels[4, 4] = 1
    table.add("two, with comma.png", image_objects("two, with comma.png", labels, None, {}, ["background", "cell"]))
    objects, counts = table.write(tmp_path)
    rows = list(csv.DictReader(objects.open()))
    assert len(rows) == 2 and rows[0]["mean_probability"] == ""
    assert list(csv.reader(counts.open())) == [["image", "cell"], ["empty.png", "0"], ["two, with comma.png", "2"]]


def test_instance_png_is_16_bit_and_refuses_more_than_65535() -> None:
    assert instance_png(np.array([[0, 300]], np.int32), "x").dtype == np.uint16
    with pytest.raises(DataError, match="at most 65535"):
        instance_png(np.array([[0, 70000]], np.int32), "x")
