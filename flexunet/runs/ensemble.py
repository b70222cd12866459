"""Several trained checkpoints as one model: the folds of a cross-validation, or any runs with one label space.

The members' probabilities are averaged (nnU-Net's fold ensemble), and the mean is handed on as logits of itself
(the sigmoid's inverse for a binary model, the logarithm for a softmax), so the Predictor's thresholds, TTA,
sliding window and slides, and ONNX export treat the ensemble as one model with no change.
"""
from __future__ import annotations

import glob
from pathlib import Path

import torch
from torch import Tensor, nn

from flexunet.config.schema import Config
from flexunet.errors import CheckpointError, ConfigError
from flexunet.runs.checkpoint import TrainingConfig, load_checkpoint, model_from_state, read_training_config

EPS = 1e-6  # probabilities are kept in [EPS, 1 - EPS] before their logits are taken


class Ensemble(nn.Module):
    """The mean probability of `members` (each a model from images to logits), returned as logits."""

    def __init__(self, members: list[nn.Module], binary: bool, trainings: tuple[TrainingConfig, ...] = ()) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.binary = binary
        self.trainings = trainings  # the config each member was trained with (load_ensemble), for the provenance

    def forward(self, x: Tensor) -> Tensor:
        total: Tensor | None = None
        for member in self.members:
            logits = member(x).float()
            probs = torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)
            total = probs if total is None else total + probs
        assert total is not None  # an ensemble has members
        mean = (total / len(self.members)).clamp(EPS, 1 - EPS)
        return torch.logit(mean) if self.binary else torch.log(mean)


def ensemble_paths(patterns: list[str]) -> list[Path]:
    """Checkpoint paths from `--ensemble` values: files, or quoted globs such as 'models/fold_*/best.pt'; sorted
    within each pattern, duplicates dropped. ConfigError when a pattern matches nothing or fewer than 2 remain."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not Path(matches[0]).exists():
            raise ConfigError(f"--ensemble {pattern}: no checkpoint matches")
        found += [Path(m) for m in matches]
    unique = list(dict.fromkeys(found))
    if len(unique) < 2:
        raise ConfigError(f"--ensemble {' '.join(patterns)}: {len(unique)} checkpoint; an ensemble needs at least 2 "
                          "(quote a glob: --ensemble 'models/fold_*/best.pt')")
    return unique


def _label_space(cfg: Config) -> tuple[int, tuple[str, ...], tuple[tuple[tuple[int, int, int], int], ...]]:
    colours = tuple(sorted(cfg.rgb_map.items())) if cfg.model.num_classes > 1 else ()
    return cfg.model.num_classes, tuple(cfg.label_names), colours


def load_ensemble(paths: list[Path], device: torch.device, cfg: Config) -> Ensemble:
    """Each checkpoint's model, built from the config stored in it (members may differ in architecture), checked to
    have `cfg`'s label space (number of classes, names, mask colours): averaging a 1-class and a 3-class model, or
    two models whose class 1 means different things, is refused naming the file."""
    members, trainings = [], []
    expected = _label_space(cfg)
    for path in paths:
        state = load_checkpoint(path, device)
        training = read_training_config(state, path)
        if training.cfg is None:
            raise CheckpointError(training.problem)
        got = _label_space(training.cfg)
        if got != expected:
            what = ("binary" if got[0] == 1 else f"{got[0]} classes") + f" {list(got[1])}"
            want = ("binary" if expected[0] == 1 else f"{expected[0]} classes") + f" {list(expected[1])}"
            colours = "" if got[:2] != expected[:2] else " with other mask colours"
            raise CheckpointError(f"{path}: trained for {what}{colours}, the config for {want}; an ensemble averages "
                                  "models of one label space")
        members.append(model_from_state(state, path, training.cfg, device))
        trainings.append(training)
    return Ensemble(members, cfg.model.num_classes == 1, tuple(trainings)).to(device).eval()
