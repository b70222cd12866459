"""Honest metrics are scored at each image's original size, on the masks `flexunet infer` writes."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flexunet.config import load_config
from flexunet.evaluate import evaluate_details
from flexunet.infer.predict import predict_images, probs_to_labels
from flexunet.models import build_model
from tests.conftest import make_config, write_disc_pairs


class Oracle(torch.nn.Module):
    """A 'model' whose logits are the bright disc: sigmoid(large * (red - 0.5)), at whatever size it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, :1] - 0.47)


@pytest.mark.parametrize("size", [32, 96])
def test_counts_cover_every_original_pixel_and_match_infer(tmp_path: Path, size: int) -> None:
    data = tmp_path / "data"
    write_disc_pairs(data / "test", 5, size=size, seed=3)
    cfg = load_config(make_config(tmp_path, data, {"test": {"images_dir": str(data / "test" / "images"),
                                                             "masks_dir": str(data / "test" / "masks")}}))
    assert (cfg.model.image_width, cfg.model.image_height) == (32, 32)
    model = Oracle().eval()
    ev = evaluate_details(model, cfg, "test", torch.device("cpu"), hd95=True)
    assert ev.confusion.sum().item() == 5 * size * size  # every pixel of every original mask, not 32 x 32
    masks = [cv2.imread(str(p), 0) > 127 for p in sorted((data / "test" / "masks").glob("*.png"))]
    fg = ev.counts.foreground()
    assert fg.tp[:, 0].add(fg.fn[:, 0]).tolist() == [float(m.sum()) for m in masks]
    assert torch.allclose(ev.diagonals, torch.full((5,), math.hypot(size, size), dtype=torch.float64))
    # the predictions scored are the masks infer writes: same resize, same threshold
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((data / "test" / "images").glob("*.png"))]
    written = [probs_to_labels(p, cfg.infer.threshold) for p in predict_images(model, images, cfg, torch.device("cpu"))]
    tp = [float((w.astype(bool) & m).sum()) for w, m in zip(written, masks)]
    assert fg.tp[:, 0].tolist() == tp


def test_evaluation_of_a_real_model_at_original_size_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_disc_pairs(data / "test", 3, size=80, seed=1)
    cfg = load_config(make_config(tmp_path, data, {"test": {"images_dir": str(data / "test" / "images"),
                                                             "masks_dir": str(data / "test" / "masks")}}))
    ev = evaluate_details(build_model(cfg.model).eval(), cfg, "test", torch.device("cpu"), examples=2)
    assert ev.counts.tp.shape == (3, 2) and ev.confusion.sum().item() == 3 * 80 * 80
    assert all(e.image.shape[:2] == (32, 32) for e in ev.worst)  # examples are shown at model size
    assert np.isfinite(ev.loss)
