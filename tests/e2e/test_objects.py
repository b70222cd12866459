"""Objects end to end: `[postprocess] auto` chosen after training, object metrics and outlines in the evaluation,
objects.csv, counts and instance PNGs from infer."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_config, run_cli


@pytest.fixture
def trained_auto(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 6}, "postprocess": {"auto": True}})
    assert run_cli(monkeypatch, "train", str(config), "--quiet", "--device", "cpu") == 0
    return config


def test_auto_choice_is_saved_and_evaluation_reports_objects(trained_auto: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = trained_auto.parent
    choice = json.loads((root / "models" / "postprocess.json").read_text())
    entry = choice["classes"]["class_1"]
    assert choice["split"] == "valid" and choice["images"] == 4
    assert set(entry["choice"]) == {"min_object_px", "min_object_fraction", "fill_holes", "keep_largest"}
    assert entry["dice_after"] >= entry["dice_before"]
    assert run_cli(monkeypatch, "evaluate", str(trained_auto), "--quiet") == 0
    assert "class_1 objects: 4 true" in capsys.readouterr().out
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["postprocess"]["auto"] is True
    assert metrics["postprocess"]["choice"]["classes"]["class_1"] == entry
    cls = metrics["per_class"]["class_1"]
    assert cls["true_objects"] == 4  # one disc per test image
    for key in ("object_f1", "object_f1_ci_low", "pq", "sq", "count_mae", "count_ratio", "object_recall"):
        assert key in cls, key
    with (root / "eval" / "per_class.csv").open() as handle:
        header = next(csv.reader(handle))
    assert {"object_f1", "pq", "count_mae", "count_ratio", "true_objects", "predicted_objects"} <= set(header)
    with (root / "eval" / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["true_objects_class_1"] for r in rows] == ["1"] * 4
    assert sum(int(r["predicted_objects_class_1"]) for r in rows) == cls["predicted_objects"]
    page = (root / "eval" / "report.html").read_text()
    assert 'id="objects"' in page and 'id="postprocess-choice"' in page and 'id="worst-objects"' in page
    assert page.count('class="true-count">1<') >= 1


def test_auto_without_a_choice_file_is_a_one_line_error(tmp_path: Path, tiny_dataset: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1}})
    assert run_cli(monkeypatch, "train", str(config), "--quiet", "--device", "cpu") == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, "evaluate", str(config), "--quiet", "--set", "postprocess.auto=True") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "postprocess.json not found" in err[0]


def test_infer_writes_objects_counts_and_instances(trained_auto: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = trained_auto.parent
    assert run_cli(monkeypatch, "infer", str(trained_auto), "--quiet", "--instances",
                   "--set", "postprocess.separate='watershed'") == 0
    with (root / "out" / "objects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "object_id", "class", "area_px", "centroid_y", "centroid_x", "bbox_min_row",
                             "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_probability"]
    with (root / "out" / "counts.csv").open() as handle:
        counts = list(csv.DictReader(handle))
    assert len(counts) == 4 and sum(int(c["class_1"]) for c in counts) == len(rows)
    for count in counts:
        instances = cv2.imread(str(root / "out" / "instances" / count["image"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / "out" / count["image"]), cv2.IMREAD_UNCHANGED)
        assert instances.dtype == np.uint16 and instances.shape == mask.shape
        assert int(instances.max()) == int(count["class_1"])
        assert np.array_equal(instances > 0, mask > 0)  # every mask pixel belongs to one object
        mine = [r for r in rows if r["image"] == count["image"]]
        assert sorted(int(r["area_px"]) for r in mine) == sorted(np.bincount(instances.ravel())[1:].tolist())
        assert all(0.5 < float(r["mean_probability"]) <= 1 for r in mine)


def test_tiled_infer_postprocesses_and_counts_too(trained_auto: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = trained_auto.parent
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(trained_auto), "--tiled", "--output", str(root / "tiled"),
                   "--set", "postprocess.min_object_fraction=0.9", "--set", "postprocess.auto=False",
                   "--set", "tiledinfer.overlapping=8") == 0
    with (root / "tiled" / "counts.csv").open() as handle:
        counts = list(csv.DictReader(handle))
    # no disc covers 90% of an image: every object is removed, from the masks and from the counts
    assert len(counts) == 4 and all(c["class_1"] == "0" for c in counts)
    assert all(not cv2.imread(str(root / "tiled" / c["image"]), cv2.IMREAD_UNCHANGED).any() for c in counts)
    assert "objects in objects.csv" in capsys.readouterr().out


def test_an_instance_mask_of_more_than_65535_objects_is_one_line_and_nothing_is_written(
        tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """32-bit ids (a TIFF of 90,000 objects) cannot be read as 8- or 16-bit: refused from the header when the pairs
    are listed, before the run writes its folders (it used to fail in the first epoch, after writing them)."""
    import tifffile

    masks = tmp_path / "masks32"
    masks.mkdir()
    for image in sorted((tiny_dataset / "train" / "images").iterdir()):
        h, w = cv2.imread(str(image)).shape[:2]
        ids = np.arange(1, h * w + 1, dtype=np.uint32).reshape(h, w) + 65_000
        tifffile.imwrite(masks / f"{image.stem}.tif", ids)
    config = make_config(tmp_path, tiny_dataset, {"train": {"masks_dir": str(masks)}, "mask": {"kind": "instances"}})
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "train", str(config), "-q", "--device", "cpu") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks32" in err[0] and "unsupported pixel type uint32" in err[0], err
    assert not (tmp_path / "models").exists() and not (tmp_path / "eval").exists()
