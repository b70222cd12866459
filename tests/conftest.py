"""Shared fixtures: tiny synthetic datasets, a config factory, and the location of the shared real data."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def requires_shared(*parts: str) -> Path:
    """The shared data folder, or skip the test cleanly when this checkout has none beside it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present at {path}")
    return path


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run `flexunet ARGS` in this process (as the console script does) and return its exit code."""
    from flexunet.cli import main

    monkeypatch.setattr(sys, "argv", ["flexunet", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_disc_pairs(folder: Path, count: int, size: int = 32, seed: int = 0, colour_mask: bool = False) -> Path:
    """`count` image/mask pairs: a bright disc (noisy) on a dark noisy background; masks 0/255 grey."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(mask, (int(cx), int(cy)), int(rng.integers(size // 8, size // 4)), 255, -1)
        image = np.where(mask[..., None] > 0, 200, 40) + rng.normal(0, 12, (size, size, 3))
        cv2.imwrite(str(folder / "images" / f"img_{i:03d}.png"), image.clip(0, 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"img_{i:03d}.png"), mask)
    return folder


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """train/valid/test of 32x32 disc pairs: fast to load, and a small model learns them in a few epochs."""
    for split, n, seed in (("train", 16, 0), ("valid", 4, 1), ("test", 4, 2)):
        write_disc_pairs(tmp_path / "data" / split, n, seed=seed)
    return tmp_path / "data"


def make_config(tmp_path: Path, data: Path, sections: dict[str, dict[str, object]] | None = None) -> Path:
    """A seed-format config file for a tiny binary FlexUNet on `data`; `sections` override or add keys."""
    values: dict[str, dict[str, object]] = {
        "model": {"image_width": 32, "image_height": 32, "num_classes": 1, "base_filters": 8, "num_layers": 3,
                  "dropout_rate": 0.0, "learning_rate": 0.01, "clipvalue": 0.5, "loss": "bce_dice_loss",
                  "metrics": ["iou_coef"]},
        "train": {"epochs": 3, "batch_size": 4, "patience": 10, "model_dir": "./models", "eval_dir": "./eval",
                  "images_dir": str(data / "train" / "images"), "masks_dir": str(data / "train" / "masks"),
                  "metrics": ["iou_coef", "val_iou_coef"], "num_infer_images": 2},
        "valid": {"images_dir": str(data / "valid" / "images"), "masks_dir": str(data / "valid" / "masks")},
        "test": {"images_dir": str(data / "test" / "images"), "masks_dir": str(data / "test" / "masks")},
        "infer": {"images_dir": str(data / "test" / "images"), "output_dir": "./out", "merged_dir": "./merged"},
    }
    for section, entries in (sections or {}).items():
        values.setdefault(section, {}).update(entries)
    lines = []
    for section, entries in values.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value!r}" for key, value in entries.items()]
    path = tmp_path / "test.config"
    path.write_text("\n".join(lines) + "\n")
    return path


class TempFileWrapper:
    """flexunet.files' temporary output file with its `write` replaced by a subclass (a full disk, a size limit);
    every other attribute is the real file's."""

    def __init__(self, file):
        self.file = file

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class FullDisk(TempFileWrapper):
    """A temporary output file on a disk that fills up: its first write keeps half the bytes, then fails with
    ENOSPC, as a full disk does."""

    def write(self, data) -> int:
        self.file.write(bytes(data)[: len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_full_when(monkeypatch, fails) -> None:
    """Every atomic write for which `fails(temp name, atomic writes so far, writes of this file)` is true meets a
    full disk half-way through its bytes."""
    import flexunet.files

    real, calls = flexunet.files._open_temp, []

    def open_temp(fd: int):
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # .<final name>.<random>.tmp
        calls.append(name.rsplit(".", 2)[0])
        file = real(fd)
        return FullDisk(file) if fails(name, len(calls), calls.count(calls[-1])) else file

    monkeypatch.setattr(flexunet.files, "_open_temp", open_temp)


def save_random_checkpoint(config: Path, seed: int = 0) -> Path:
    """best.pt of the run `config` describes, holding its model with random weights (seeded); returns its path."""
    import torch

    from flexunet.config import load_config
    from flexunet.config.load import config_to_ini
    from flexunet.models import build_model
    from flexunet.runs.checkpoint import save_checkpoint
    from flexunet.runs.rundir import run_dir_for

    cfg = load_config(config)
    torch.manual_seed(seed)
    run_dir_for(cfg).model_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir_for(cfg).best, {"model": build_model(cfg.model).state_dict(), "config": config_to_ini(cfg),
                                            "epoch": 0})
    return run_dir_for(cfg).best
