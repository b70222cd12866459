"""Checkpoints: weights plus the resolved config and where each of its values came from (and, in last.pt, the state
needed to resume).

Everything saved is tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)` reads it: a
checkpoint is data, never code.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flexunet.config.load import config_from_text, config_to_ini
from flexunet.config.schema import Config
from flexunet.errors import CheckpointError
from flexunet.files import atomic_write
from flexunet.models import build_model
from flexunet.models.registry import load_problem

FORMAT_VERSION = 2  # 2: "epoch"/"best_epoch" numbered from 1 (finished epochs); 1 held 0-based indices


def first_nonfinite(weights: Mapping[str, Tensor]) -> str | None:
    """'name (nan)' or 'name (inf)' for the first floating tensor holding NaN or Inf; None when all are finite."""
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{name} ({'nan' if bool(torch.isnan(tensor).any()) else 'inf'})"
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write `state` (must hold "model" and "config") to `path`.

    Weights holding NaN/Inf (a diverged last step) raise CheckpointError and leave `path` as it was: a resume
    from it would fail at once.
    """
    bad = first_nonfinite(state["model"])
    if bad is not None:
        raise CheckpointError(f"{path}: not written, weight {bad} is not finite (training diverged); "
                              f"{kept_checkpoint(path)}")
    # streamed: no copy in RAM
    atomic_write(path, lambda file: torch.save({"format": FORMAT_VERSION, **state}, file), kind="checkpoint")


def checkpoint_config(cfg: Config) -> dict[str, Any]:
    """The entries that say how a checkpoint was trained: "config" (the resolved config as INI text) and
    "config_origins" ("section.key" -> "file" / "command line"; keys absent there were defaults), plain strings."""
    return {"config": config_to_ini(cfg), "config_origins": {str(k): str(v) for k, v in cfg.origins.items()}}


def stored_origins(state: dict[str, Any]) -> dict[str, str] | None:
    """The checkpoint's "config_origins", or None for a checkpoint written before they were stored."""
    origins = state.get("config_origins")
    return {str(k): str(v) for k, v in origins.items()} if isinstance(origins, dict) else None


def kept_checkpoint(path: Path) -> str:
    """What is left at `path` after a refused save, numbered as the training log numbers epochs."""
    if not path.is_file():
        return "no earlier checkpoint exists there"
    try:
        epoch = load_checkpoint(path).get("epoch")
    except CheckpointError:
        return "the earlier file there is kept, but it is not readable either"
    return "the earlier file is kept" + (f" (from epoch {int(epoch)})" if epoch is not None else "")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; a missing, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train first, or pass --checkpoint)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    # arbitrary bytes fail in arbitrary ways (struct.error, KeyError, ...): all mean "not ours"
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable flexunet checkpoint ({load_problem(exc)})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a flexunet checkpoint (no model weights and config inside)")
    return numbered_from_one(state)


def numbered_from_one(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (0-based epoch indices) read as today's: resuming it must not skip an epoch."""
    if int(state.get("format", 1)) < 2:
        for key in ("epoch", "best_epoch"):
            if isinstance(state.get(key), int):
                state[key] += 1
    return state


def load_weights(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load the checkpoint's weights into `model`.

    A shape or key mismatch names the checkpoint and the first problem.
    """
    weights = state["model"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: weights are not a state dict")
    expected = model.state_dict()
    for key, tensor in weights.items():
        if key in expected and (not isinstance(tensor, torch.Tensor) or tensor.shape != expected[key].shape):
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(
                f"{path}: weight {key} has shape {got}, the config's model needs {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        raise CheckpointError(
            f"{path}: does not fit the config's model ({len(missing)} missing, {len(unexpected)} unexpected weights, "
            f"e.g. {first})"
        )
    model.load_state_dict(weights)


@dataclass(frozen=True)
class TrainingConfig:
    """The config a checkpoint was trained with; `cfg` None (and `problem` saying why) when it does not load."""

    cfg: Config | None
    origins_recorded: bool  # False for an older checkpoint: its values are known, not where they came from
    problem: str = ""


def read_training_config(state: dict[str, Any], checkpoint: str | Path) -> TrainingConfig:
    """The checkpoint's stored config with the origins it recorded (older checkpoints have none); never raises, so a
    checkpoint whose config this version cannot read still evaluates with the config given."""
    try:
        trained = config_from_text(str(state["config"]), f"{Path(checkpoint).name}:config")
    except Exception as exc:  # a checkpoint from another version: say which file, not a traceback
        problem = f"{checkpoint}: its stored config does not load ({str(exc).splitlines()[0]})"
        return TrainingConfig(None, False, problem)
    origins = stored_origins(state)
    return TrainingConfig(trained.model_copy(update={"origins": origins or {}}), origins is not None)


def load_trained_model(checkpoint: Path, device: torch.device, cfg: Config | None = None) -> tuple[nn.Module, Config]:
    """The model stored in a checkpoint, built from the config inside it (or `cfg` when given), in eval mode."""
    state = load_checkpoint(checkpoint, device)
    if cfg is None:
        training = read_training_config(state, checkpoint)
        if training.cfg is None:
            raise CheckpointError(training.problem)
        cfg = training.cfg
    return model_from_state(state, Path(checkpoint), cfg, device), cfg


def model_from_state(state: dict, checkpoint: Path, cfg: Config, device: torch.device) -> nn.Module:
    """`cfg`'s model with the checkpoint's weights, on `device`, in eval mode. The encoder's starting weights
    ([model] encoder_weights) are not fetched again: the checkpoint holds every tensor, input statistics too."""
    model = build_model(cfg.model.model_copy(update={"encoder_weights": None}))
    load_weights(model, state, checkpoint)
    return model.to(device).eval()
