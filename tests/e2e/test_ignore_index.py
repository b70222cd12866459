"""Index masks with an "unsure" ring (label 255 = [mask] ignore_index) go through train (with augmentation),
evaluate (with its report), infer and the augmentation preview."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_config, run_cli


def write_ringed_pairs(folder: Path, count: int, seed: int) -> None:
    """Discs labelled 1 with a 1-px ring labelled 255 around them, in 8-bit index masks."""
    rng = np.random.default_rng(seed)
    for name in ("images", "masks"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        labels = np.zeros((32, 32), np.uint8)
        centre = tuple(int(v) for v in rng.integers(10, 22, 2))
        cv2.circle(labels, centre, 6, 1, -1)
        cv2.circle(labels, centre, 6, 255, 1)
        image = np.where(labels[..., None] > 0, 200, 40) + rng.normal(0, 10, (32, 32, 3))
        cv2.imwrite(str(folder / "images" / f"c{i}.png"), image.clip(0, 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"c{i}.png"), labels)


@pytest.mark.slow
def test_ignore_index_runs_through_every_verb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    for split, n, seed in (("train", 8, 0), ("valid", 2, 1), ("test", 2, 2)):
        write_ringed_pairs(data / split, n, seed)
    config = make_config(tmp_path, data, {
        "model": {"num_classes": 2, "generator": True, "loss": "dice_ce_loss", "metrics": ["dice_coef_multiclass"]},
        "train": {"epochs": 2, "metrics": ["dice_coef_multiclass", "val_dice_coef_multiclass"]},
        "mask": {"ignore_index": 255},
    })
    assert run_cli(monkeypatch, "train", str(config), "--quiet", "--device", "cpu") == 0
    assert run_cli(monkeypatch, "evaluate", str(config), "--quiet") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == ["class_1"] and 0 <= metrics["per_class"]["class_1"]["dice"] <= 1
    assert (tmp_path / "eval" / "report.html").stat().st_size > 1000  # its overlays show the ring unpainted
    assert run_cli(monkeypatch, "infer", str(config), "--quiet") == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "augment", str(config), "--preview", "2") == 0
    assert (tmp_path / "augment_preview.png").is_file()
