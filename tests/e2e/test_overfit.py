"""One batch, a few dozen steps: the FlexUNet and training step can fit it (IoU > 0.9)."""
from __future__ import annotations

from pathlib import Path

import torch

from flexunet.config import config_from_dict
from flexunet.data import build_datasets
from flexunet.labels import LabelSpace
from flexunet.losses import build_loss
from flexunet.metrics import confusion_counts, iou
from flexunet.models import build_model
from flexunet.train.step import make_optimizer
from tests.conftest import write_disc_pairs


def test_overfit_one_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    write_disc_pairs(tmp_path, 4, size=32)
    cfg = config_from_dict({
        "model": {"image_width": 32, "image_height": 32, "base_filters": 8, "num_layers": 3, "dropout_rate": 0.0,
                  "learning_rate": 0.01, "loss": "bce_dice_loss"},
        "train": {"images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks"), "validation_split": 0.25},
    })
    data = build_datasets(cfg)
    x = torch.stack([data.train[i][0] for i in range(len(data.train))]).float() / 255
    y = torch.stack([data.train[i][1] for i in range(len(data.train))]).long()
    model, loss_fn = build_model(cfg.model), build_loss(cfg.model)
    optim = make_optimizer(model, cfg.model)
    for _ in range(60):
        optim.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optim.step()
    model.eval()
    space = LabelSpace.from_config(cfg)
    with torch.no_grad():
        counts = confusion_counts(space.labels(space.probabilities(model(x))), y, space.num_labels).total()
    assert iou(counts)[1].item() > 0.9
