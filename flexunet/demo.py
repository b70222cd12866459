"""`flexunet demo`: a synthetic multi-class cell dataset, then train -> evaluate -> infer with a small FlexUNet.

The cells are drawn, not downloaded: a light cytoplasm (class 1, green in the masks) around a dark nucleus
(class 2, red) on a noisy stained background, so the demo runs anywhere in a few minutes on a laptop CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flexunet.data.io import write_image
from flexunet.errors import OutputError
from flexunet.files import atomic_write_text, check_outputs, make_folder, written_by_flexunet

DEMO_RGB_MAP = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}

DEMO_CONFIG = """; flexunet demo: synthetic cells, 3 classes (background, cytoplasm, nucleus)
[model]
model          = "TensorFlowFlexUNet"
image_width    = {size}
image_height   = {size}
image_channels = 3
num_classes    = 3
base_filters   = 16
num_layers     = 4
dropout_rate   = 0.02
learning_rate  = 0.002
clipvalue      = 0.5
loss           = "dice_ce_loss"
metrics        = ["dice_coef_multiclass"]

[train]
epochs         = {epochs}
batch_size     = 8
patience       = 8
model_dir      = "./models"
eval_dir       = "./eval"
images_dir     = "./data/train/images"
masks_dir      = "./data/train/masks"
learning_rate_reducer = True
reducer_factor = 0.5
reducer_patience = 3
num_infer_images = 4
seed           = {seed}

[valid]
images_dir = "./data/valid/images"
masks_dir  = "./data/valid/masks"

[test]
images_dir = "./data/test/images"
masks_dir  = "./data/test/masks"

[infer]
images_dir = "./data/test/images"
output_dir = "./test_output"
merged_dir = "./test_output_merged"

[mask]
rgb_map = {{(0,0,0):0, (0,255,0):1, (255,0,0):2}}
class_names = ["background", "cytoplasm", "nucleus"]
"""


def draw_cell_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (size, size, 3) and its label map: 1-3 cells, each a cytoplasm ellipse holding a nucleus."""
    background = np.array([232, 205, 215]) + rng.normal(0, 8, 3)
    image = np.ones((size, size, 3), np.float32) * background
    labels = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        ax, ay = rng.uniform(0.12, 0.22, 2) * size
        angle = rng.uniform(0, 180)
        cell = np.zeros_like(labels)
        cv2.ellipse(cell, (int(cx), int(cy)), (int(ax), int(ay)), angle, 0, 360, 1, -1)
        nucleus = np.zeros_like(labels)
        scale = rng.uniform(0.35, 0.55)
        ncx, ncy = cx + rng.uniform(-0.2, 0.2) * ax, cy + rng.uniform(-0.2, 0.2) * ay
        cv2.ellipse(nucleus, (int(ncx), int(ncy)), (max(2, int(ax * scale)), max(2, int(ay * scale))),
                    rng.uniform(0, 180), 0, 360, 1, -1)
        nucleus &= cell
        image[cell > 0] = np.array([185, 150, 205]) + rng.normal(0, 10, 3)
        image[nucleus > 0] = np.array([95, 45, 125]) + rng.normal(0, 10, 3)
        labels[cell > 0] = 1
        labels[nucleus > 0] = 2
    image = cv2.GaussianBlur(image, (0, 0), 1.0) + rng.normal(0, 9, image.shape)
    return image.clip(0, 255).astype(np.uint8), labels


def make_demo_dataset(root: Path, size: int = 64, counts: tuple[int, int, int] = (96, 24, 24), seed: int = 0) -> Path:
    """Write data/{train,valid,test}/{images,masks} under `root` (PNG images, RGB colour masks); returns data/."""
    rng = np.random.default_rng(seed)
    colours = np.array([c for c, _ in sorted(DEMO_RGB_MAP.items(), key=lambda kv: kv[1])], np.uint8)
    for split, n in zip(("train", "valid", "test"), counts, strict=True):
        for i in range(n):
            image, labels = draw_cell_image(rng, size)
            write_image(root / "data" / split / "images" / f"cell_{i:04d}.png", image)
            write_image(root / "data" / split / "masks" / f"cell_{i:04d}.png", colours[labels])
    return root / "data"


def write_demo_config(root: Path, size: int = 64, epochs: int = 30, seed: int = 137) -> Path:
    path = root / "demo.config"
    atomic_write_text(path, DEMO_CONFIG.format(size=size, epochs=epochs, seed=seed))
    return path


@dataclass(frozen=True)
class DemoResult:
    config: Path
    foreground_dice: float
    per_class_dice: dict[str, float]
    masks_written: int
    output_dir: Path
    merged_dir: Path
    report: Path | None  # report.html of the evaluation


def run_demo(root: Path, epochs: int = 30, device: str | None = None, quiet: bool = False, size: int = 64,
             counts: tuple[int, int, int] = (96, 24, 24)) -> DemoResult:
    """Generate the data and config under `root`, then train, evaluate on [test] and infer.

    The API of `flexunet demo`.
    """
    from flexunet.config import load_config
    from flexunet.evaluate import evaluate_from_config
    from flexunet.infer import infer_from_config
    from flexunet.train import train_from_config

    splits = zip(("train", "valid", "test"), counts, strict=True)
    planned = [root / "data" / split / kind / f"cell_{i:04d}.png" for split, n in splits
               for kind in ("images", "masks") for i in range(n)]
    if root.is_dir() and any(root.iterdir()) and not written_by_flexunet(root / "demo.config"):
        raise OutputError(f"{root}: not empty and not an earlier demo (no demo.config written by flexunet); "
                          "choose a new folder with --out")
    check_outputs(planned + [root / "demo.config"])  # before anything is written
    make_folder(root)
    make_demo_dataset(root, size, counts)
    config_path = write_demo_config(root, size, epochs)
    cfg = load_config(config_path)
    train_from_config(cfg, device=device, quiet=quiet)
    result = evaluate_from_config(cfg, device=device, quiet=quiet)
    inferred = infer_from_config(cfg, device=device, quiet=quiet)
    report = next((f for f in result.files if f.name == "report.html"), None)
    return DemoResult(config_path, result.mean_dice, {k: v["dice"] for k, v in result.per_class.items()},
                      len(inferred.written), Path(cfg.infer.output_dir), Path(cfg.infer.merged_dir or ""), report)
