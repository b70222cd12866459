"""Honest metrics are scored at each image's original size, on the masks `flexunet infer` writes."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flexunet.config import load_config
from flexunet.evaluate import EvalSettings, evaluate_details
from flexunet.labels import LabelSpace
from flexunet.models import build_model
from flexunet.predict import predictor_from_config
from tests.conftest import make_config, write_disc_pairs


class Oracle(torch.nn.Module):
    """A 'model' whose logits are the bright disc: sigmoid(large * (red - 0.5)), at whatever size it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, :1] - 0.47)


def _test_data(cfg):
    from flexunet.data.dataset import make_dataset, pairs_for

    return make_dataset(cfg, pairs_for(cfg, "test"))


@pytest.mark.parametrize("size", [32, 96])
def test_counts_cover_every_original_pixel_and_match_infer(tmp_path: Path, size: int) -> None:
    data = tmp_path / "data"
    write_disc_pairs(data / "test", 5, size=size, seed=3)
    cfg = load_config(make_config(tmp_path, data, {"test": {"images_dir": str(data / "test" / "images"),
                                                             "masks_dir": str(data / "test" / "masks")}}))
    assert (cfg.model.image_width, cfg.model.image_height) == (32, 32)
    model = Oracle().eval()
    predictor = predictor_from_config(cfg, model, torch.device("cpu"))
    ev = evaluate_details(predictor, _test_data(cfg), EvalSettings.from_config(cfg), hd95=True)
    assert ev.confusion.sum().item() == 5 * size * size  # every pixel of every original mask, not 32 x 32
    masks = [cv2.imread(str(p), 0) > 127 for p in sorted((data / "test" / "masks").glob("*.png"))]
    fg = ev.counts.foreground()
    assert fg.tp[:, 0].add(fg.fn[:, 0]).tolist() == [float(m.sum()) for m in masks]
    assert torch.allclose(ev.diagonals, torch.full((5,), math.hypot(size, size), dtype=torch.float64))
    # the predictions scored are the masks infer writes: same resize, same threshold
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((data / "test" / "images").glob("*.png"))]
    written = predictor.labels(images)  # what `flexunet infer` writes
    tp = [float((w.astype(bool) & m).sum()) for w, m in zip(written, masks)]
    assert fg.tp[:, 0].tolist() == tp


def test_evaluation_of_a_real_model_at_original_size_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_disc_pairs(data / "test", 3, size=80, seed=1)
    cfg = load_config(make_config(tmp_path, data, {"test": {"images_dir": str(data / "test" / "images"),
                                                             "masks_dir": str(data / "test" / "masks")}}))
    ev = evaluate_details(predictor_from_config(cfg, build_model(cfg.model).eval(), torch.device("cpu")),
                          _test_data(cfg), EvalSettings.from_config(cfg), examples=2)
    assert ev.counts.tp.shape == (3, 2) and ev.confusion.sum().item() == 3 * 80 * 80
    assert all(e.image.shape[:2] == (32, 32) for e in ev.worst)  # examples are shown at model size
    assert np.isfinite(ev.loss)


def test_masks_of_different_sizes_in_one_batch(tmp_path: Path) -> None:
    data = tmp_path / "data" / "test"
    for size, seed in ((48, 4), (96, 5)):
        write_disc_pairs(tmp_path / f"s{size}", 2, size=size, seed=seed)
        for kind in ("images", "masks"):
            (data / kind).mkdir(parents=True, exist_ok=True)
            for f in (tmp_path / f"s{size}" / kind).glob("*.png"):
                f.rename(data / kind / f"{size}_{f.name}")
    cfg = load_config(make_config(tmp_path, tmp_path / "data", {
        "test": {"images_dir": str(data / "images"), "masks_dir": str(data / "masks")}, "eval": {"batch_size": 4}}))
    ev = evaluate_details(predictor_from_config(cfg, Oracle().eval(), torch.device("cpu")), _test_data(cfg),
                          EvalSettings.from_config(cfg), hd95=True)
    assert ev.confusion.sum().item() == 2 * 48 * 48 + 2 * 96 * 96
    sizes = [48, 48, 96, 96]  # names sort 48_* before 96_*
    assert ev.diagonals.tolist() == [math.hypot(s, s) for s in sizes]
    fg = ev.counts.foreground()
    masks = [cv2.imread(str(p), 0) > 127 for p in sorted((data / "masks").glob("*.png"))]
    assert fg.tp[:, 0].add(fg.fn[:, 0]).tolist() == [float(m.sum()) for m in masks]


def test_a_one_sided_hd95_counts_as_that_images_diagonal(tmp_path: Path) -> None:
    from flexunet.evaluate import summarise
    from flexunet.metrics import Counts

    cfg = load_config(make_config(tmp_path, tmp_path))
    counts = Counts(*(torch.tensor([[50.0, 5.0], [50.0, 0.0], [50.0, 5.0]]) for _ in range(3)))
    hd95 = torch.tensor([[2.0], [math.inf], [math.nan]], dtype=torch.float64)  # found, missed, class absent
    diagonals = torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float64)
    per_class, rows = summarise(counts, ["a", "b", "c"], EvalSettings.from_config(cfg), hd95, resamples=0,
                                diagonals=diagonals)
    entry = next(iter(per_class.values()))
    assert entry["hd95"] == pytest.approx((2.0 + 100.0) / 2)  # the miss costs its own image's diagonal, 100
    assert entry["hd95_one_sided"] == 1
    assert math.isinf(rows[1][next(k for k in rows[1] if k.startswith("hd95_"))])  # per_image.csv keeps inf
