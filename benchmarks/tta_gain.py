"""What flip test-time augmentation (--tta) gains on pap-smear test: per-class Dice/IoU with and without it.

Trains a small flexunet (64 px, one epoch, about 4 minutes on a shared 2-core CPU) on pap-smear train, then evaluates the
same checkpoint on test twice. The given pap-smear split leaks: test cells are rotations/flips of train cells, so
the numbers measure memorisation, and flip TTA shows the views the model has literally seen. Read the gain as a
check that TTA works end to end, not as the gain to expect on new patients.
Writes benchmarks/results/tta_gain.json.

    python benchmarks/tta_gain.py [--epochs 1] [--size 64]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from machine import machine_info  # noqa: E402

from flexunet.config import config_from_dict
from flexunet.evaluate import evaluate_from_config
from flexunet.train import train_from_config

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pap-smear"
RESULT = Path(__file__).resolve().parent / "results" / "tta_gain.json"


def paired(plain: np.ndarray, tta: np.ndarray, resamples: int = 2000) -> dict[str, float | int]:
    """Per-image Dice gain with a paired bootstrap 95% interval: the per-class intervals overlap, but they are unpaired."""
    diff = tta - plain
    diff = diff[~np.isnan(diff)]
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return {"mean_gain": round(float(diff.mean()), 4), "ci95_low": round(float(np.quantile(means, 0.025)), 4),
            "ci95_high": round(float(np.quantile(means, 0.975)), 4), "images_better": int((diff > 0).sum()),
            "images_worse": int((diff < 0).sum()), "images": len(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"pap-smear data not found at {DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        model = {"image_width": args.size, "image_height": args.size, "image_channels": 3, "num_classes": 1,
                 "base_filters": 8, "num_layers": 5, "dropout_rate": 0.0, "learning_rate": 0.002, "clipvalue": 0.5,
                 "loss": "bce_iou_loss", "metrics": ["iou_coef"]}
        sections = {
            "model": model,
            "train": {"epochs": args.epochs, "batch_size": 8, "patience": 10, "seed": 137, "model_dir": f"{tmp}/models",
                      "eval_dir": f"{tmp}/eval", "epoch_change_infer": False,
                      "images_dir": str(DATA / "train/images"), "masks_dir": str(DATA / "train/masks")},
            "valid": {"images_dir": str(DATA / "valid/images"), "masks_dir": str(DATA / "valid/masks")},
            "test": {"images_dir": str(DATA / "test/images"), "masks_dir": str(DATA / "test/masks")},
            "mask": {"threshold": 60},  # lossy JPEG masks: the seed's binarize threshold
        }
        cfg = config_from_dict(sections, base_dir=tmp, source="tta_gain")
        began = time.perf_counter()
        fit = train_from_config(cfg, device="cpu", quiet=True)
        train_s = time.perf_counter() - began
        results, per_image = {}, {}
        for name, tta in (("plain", False), ("tta_flips", True)):
            began = time.perf_counter()
            ev = evaluate_from_config(cfg, device="cpu", quiet=True, tta=tta)
            per_image[name] = np.array([float(row["dice_class_1"]) for row in ev.per_image])
            results[name] = {"seconds": round(time.perf_counter() - began, 2), "loss": round(ev.loss, 4),
                             "per_class": {c: {k: round(v, 4) for k, v in m.items()} for c, m in ev.per_class.items()}}
    dice = {k: v["per_class"]["class_1"]["dice"] for k, v in results.items()}
    iou = {k: v["per_class"]["class_1"]["iou"] for k, v in results.items()}
    report = {
        "what": "flexunet evaluate on pap-smear test (129 images) with and without flip TTA (identity, h-flip, v-flip)",
        "leak_warning": "The pap-smear split leaks: every test cell is a rotation/flip of a train cell (197 source "
                        "cells x 13 variants, split without grouping). These numbers measure memorisation, not "
                        "generalisation; flip TTA in particular averages views the model was trained on.",
        "model": model, "epochs": args.epochs, "best_epoch": fit.best_epoch, "train_seconds": round(train_s, 1),
        "results": results,
        "gain": {"dice": round(dice["tta_flips"] - dice["plain"], 4), "iou": round(iou["tta_flips"] - iou["plain"], 4)},
        "paired_per_image_dice": paired(per_image["plain"], per_image["tta_flips"]),
        "tta_cost": "3 forward passes per image instead of 1",
        "command": "python benchmarks/tta_gain.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"dice": dice, "iou": iou, "gain": report["gain"], "paired": report["paired_per_image_dice"],
                      "train_seconds": report["train_seconds"]}))


if __name__ == "__main__":
    main()
