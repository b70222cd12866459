"""`[postprocess] auto = True`: after training, choose the binary threshold and each class's postprocessing on the
validation split with the best checkpoint (after `train --folds`, on every fold's out-of-fold predictions), and save
the choice with its before/after Dice as model_dir/postprocess.json (read by evaluate and infer)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flexunet.config.schema import Config
from flexunet.data.dataset import SegmentationDataset
from flexunet.files import atomic_write_text, json_safe
from flexunet.labels import LabelSpace
from flexunet.postprocess import CHOICE_FILE, choose_postprocess, choose_threshold
from flexunet.predict import for_inference, predictor_from_config
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.rundir import RunDir


def choose_on_validation(cfg: Config, run: RunDir, valid: SegmentationDataset, device: torch.device) -> Path:
    """Predict every validation image with best.pt (whole image, as `flexunet infer`), choose the binary threshold
    and each class's postprocessing (`choose`), and write postprocess.json. Returns its path."""
    predicted = _predict(cfg, run.best, valid, device)
    return choose(cfg, [predicted], run.model_dir / CHOICE_FILE, "valid", str(run.best))


def choose_out_of_fold(cfg: Config, checkpoints: list[Path], held_out: list[SegmentationDataset],
                       device: torch.device, path: Path) -> Path:
    """nnU-Net's protocol: every fold's model predicts the pairs its fold held out, and the threshold and
    postprocessing are chosen on all those out-of-fold predictions together (every [train] + [valid] pair, each by a
    model that did not train on it) instead of one validation split; written to `path` (model_dir/postprocess.json,
    read by evaluate and infer with --ensemble of the folds)."""
    predicted = [_predict(cfg, c, data, device) for c, data in zip(checkpoints, held_out, strict=True)]
    return choose(cfg, predicted, path, "out-of-fold", ", ".join(map(str, checkpoints)))


Predicted = tuple[list[np.ndarray], list[np.ndarray]]  # probabilities (C, H, W) and true labels (H, W) per image


def _predict(cfg: Config, checkpoint: Path, data: SegmentationDataset, device: torch.device) -> Predicted:
    model, _ = load_trained_model(checkpoint, device, cfg)
    predictor = predictor_from_config(cfg, for_inference(model, device), device, tta=False,
                                      batch_size=cfg.eval.batch_size)  # no postprocess: that is being chosen
    probs, truths = [], []
    batch = cfg.eval.batch_size
    for start in range(0, len(data), batch):
        loaded = [data.load_original(i) for i in range(start, min(start + batch, len(data)))]
        probs += predictor.probs([image for image, _, _ in loaded])
        truths += [truth for _, truth, _ in loaded]
    return probs, truths


def choose(cfg: Config, predicted: list[Predicted], path: Path, split: str, checkpoint: str) -> Path:
    """Choose on the predictions of one or more models (each on its own images): first, for a binary model, the
    probability threshold with the highest pooled Dice (postprocess.THRESHOLDS, ties keep [infer] threshold), then,
    on the labels at that threshold, each class's postprocessing. Writes `path`; returns it."""
    probs = [p for each, _ in predicted for p in each]
    truths = [t for _, each in predicted for t in each]
    space = LabelSpace.from_config(cfg)
    record: dict[str, object] = {"split": split, "images": len(truths), "checkpoint": checkpoint}
    if space.binary:
        threshold = choose_threshold(probs, truths, space.threshold, cfg.mask.ignore_index)
        space = replace(space, threshold=threshold["value"])
        record["threshold"] = threshold
    labels = [space.labels(p) for p in probs]
    classes = choose_postprocess(labels, probs, truths, cfg.label_names, cfg.mask.ignore_index)
    record |= {
        "tried": max((c["tried"] for c in classes.values()), default=0),
        "rule": f"binary models: the probability threshold with the highest pooled {split} Dice; then per class, "
                "the combination of min_object_px / fill_holes / keep_largest with the highest pooled "
                f"{split} Dice of that class; ties keep the simpler one",
        "classes": classes,
    }
    atomic_write_text(path, json.dumps(json_safe(record), indent=2))
    return path


def choice_summary(path: Path) -> str:
    """One line per class: `nucleus: min_object_px=12 (validation Dice 0.812 -> 0.845)`."""
    record = json.loads(path.read_text())
    lines = []
    if "threshold" in record:
        t = record["threshold"]
        lines.append(f"threshold {t['value']:g} ({record['split']} Dice {t['dice_before']:.3f} -> "
                     f"{t['dice_after']:.3f})")
    for name, entry in record["classes"].items():
        before, after = entry["dice_before"], entry["dice_after"]
        dice = "" if before is None else f" ({record.get('split', 'valid')} Dice {before:.3f} -> {after:.3f})"
        lines.append(f"{name}: {entry['described']}{dice}")
    return "; ".join(lines)

