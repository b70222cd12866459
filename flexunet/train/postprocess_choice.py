"""`[postprocess] auto = True`: after training, choose each class's postprocessing on the validation split with the
best checkpoint, and save the choice with its before/after validation Dice as model_dir/postprocess.json (read by
evaluate and infer)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from flexunet.config.schema import Config
from flexunet.data.dataset import SegmentationDataset
from flexunet.files import atomic_write_text
from flexunet.postprocess import CHOICE_FILE, choose_postprocess
from flexunet.predict import for_inference, predictor_from_config
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.rundir import RunDir


def choose_on_validation(cfg: Config, run: RunDir, valid: SegmentationDataset, device: torch.device) -> Path:
    """Predict every validation image with best.pt (whole image, as `flexunet infer`), try the grid of
    `postprocess.candidate_settings` per class, and write postprocess.json. Returns its path."""
    model, _ = load_trained_model(run.best, device, cfg)
    predictor = predictor_from_config(cfg, for_inference(model, device), device, tta=False,
                                      batch_size=cfg.eval.batch_size)  # no postprocess: that is being chosen
    labels, probs, truths = [], [], []
    batch = cfg.eval.batch_size
    for start in range(0, len(valid), batch):
        loaded = [valid.load_original(i) for i in range(start, min(start + batch, len(valid)))]
        for (_, truth, _), p in zip(loaded, predictor.probs([image for image, _, _ in loaded]), strict=True):
            labels.append(predictor.space.labels(p))
            probs.append(p)
            truths.append(truth)
    classes = choose_postprocess(labels, probs, truths, cfg.label_names, cfg.mask.ignore_index)
    record = {
        "split": "valid", "images": len(truths), "checkpoint": str(run.best),
        "tried": max((c["tried"] for c in classes.values()), default=0),
        "rule": "per class, the combination of min_object_px / fill_holes / keep_largest with the highest pooled "
                "validation Dice of that class; ties keep the simpler one",
        "classes": classes,
    }
    path = run.model_dir / CHOICE_FILE
    atomic_write_text(path, json.dumps(_json_safe(record), indent=2))
    return path


def choice_summary(path: Path) -> str:
    """One line per class: `nucleus: min_object_px=12 (validation Dice 0.812 -> 0.845)`."""
    record = json.loads(path.read_text())
    lines = []
    for name, entry in record["classes"].items():
        before, after = entry["dice_before"], entry["dice_after"]
        dice = "" if before is None else f" (validation Dice {before:.3f} -> {after:.3f})"
        lines.append(f"{name}: {entry['described']}{dice}")
    return "; ".join(lines)


def _json_safe(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _json_safe(value.item())
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
