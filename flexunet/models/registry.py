"""Models by name: each architecture module registers one builder taking the [model] section.

`build_model` also loads `[model] pretrained_weights`, so every architecture gets the same offline loader:
nothing is ever downloaded (the seed's 'imagenet' encoders needed the internet, bug 35).
"""
from __future__ import annotations

import difflib
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flexunet.config.aliases import canonical_model_name
from flexunet.config.schema import ModelSection
from flexunet.errors import CheckpointError, ConfigError

ModelBuilder = Callable[[ModelSection], nn.Module]
MODELS: dict[str, ModelBuilder] = {}
MODEL_KEYS: dict[str, frozenset[str]] = {}  # registry name -> [model] keys its builder reads, beyond COMMON_MODEL_KEYS

# [model] keys read for every architecture: the name, input and output shape, loss, metrics and optimiser settings.
COMMON_MODEL_KEYS = frozenset(
    {
        "model", "generator", "image_width", "image_height", "image_channels", "num_classes", "loss", "metrics",
        "optimizer", "learning_rate", "weight_decay", "clipvalue", "pretrained_weights",
        # read by training (flexunet/train/param_groups.py); a ConfigError for a model without an encoder
        "freeze_encoder", "unfreeze_encoder_after", "freeze_batch_norm", "encoder_lr_scale",
    }
)


def register_model(name: str, keys: frozenset[str]) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make `name` selectable with `[model] model = "name"`; `keys` are the [model] keys its builder
    reads beyond COMMON_MODEL_KEYS (a key the user sets outside both gets a note at load)."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name], MODEL_KEYS[name] = builder, keys
        return builder

    return add


def build_model(section: ModelSection) -> nn.Module:
    """The network named by [model] model, built from the section's keys. Outputs logits (N, C, H, W)."""
    name = canonical_model_name(section.model)
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose one of {', '.join(sorted(MODELS))}"
        raise ConfigError(f"{section.where('model')} = {section.model!r}: unknown model{hint}")
    model = MODELS[name](section)
    if section.pretrained_weights:
        report = load_pretrained(model, Path(section.pretrained_weights))
        if not report.is_complete:
            # a partial load is normal when fine-tuning (another head, an encoder-only file), so warn, not fail
            warnings.warn(f"{section.where('pretrained_weights')}: {report}", stacklevel=2)
    return model


@dataclass(frozen=True)
class PretrainedReport:
    """What a pretrained state_dict gave the model: loaded tensors, and the keys that did not fit."""

    path: Path
    loaded: int
    missing: tuple[str, ...]  # in the model, not in the file: left at their initial values
    unexpected: tuple[str, ...]  # in the file, not in the model: ignored
    mismatched: tuple[str, ...]  # in both, other shape (e.g. another num_classes): left at initial values

    @property
    def is_complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{self.path}: loaded {self.loaded} tensors"]
        kinds = (("missing", self.missing), ("unexpected", self.unexpected), ("shape differs", self.mismatched))
        for label, keys in kinds:
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)


def load_pretrained(model: nn.Module, path: Path) -> PretrainedReport:
    """Load a local state_dict (or a flexunet checkpoint) into `model`, non-strictly.

    Read with weights_only=True: a weights file is data, never code. Tensors whose shape differs are skipped,
    not fatal, so an encoder trained with another number of classes still helps. A file that is missing,
    unreadable, or shares no tensor with the model raises CheckpointError.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights not found (nothing is downloaded; give a local .pt file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable state_dict ({first[:200]})") from None
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):  # a flexunet checkpoint, or a common training-script layout
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a dict of parameter name -> tensor)")
    expected = model.state_dict()
    mismatched = tuple(k for k, v in state.items() if k in expected and v.shape != expected[k].shape)
    usable = {k: v for k, v in state.items() if k in expected and k not in mismatched}
    if not usable:
        raise CheckpointError(f"{path}: no tensor fits this model (first keys: {', '.join(list(state)[:3]) or 'none'})")
    result = model.load_state_dict(usable, strict=False)
    return PretrainedReport(
        path=path,
        loaded=len(usable),
        missing=tuple(k for k in result.missing_keys if k not in mismatched),
        unexpected=tuple(k for k in state if k not in expected),
        mismatched=mismatched,
    )
