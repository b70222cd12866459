"""Models by name: each architecture module registers one builder taking the [model] section.

`build_model` also loads `[model] pretrained_weights`, so every architecture gets the same offline loader:
nothing is ever downloaded (the seed's 'imagenet' encoders needed the internet, bug 35).
"""
from __future__ import annotations

import difflib
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flexunet.config.aliases import canonical_model_name
from flexunet.config.catalog import MODEL_KEYS
from flexunet.config.schema import ModelSection
from flexunet.errors import CheckpointError, ConfigError

ModelBuilder = Callable[[ModelSection], nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make `name` selectable with `[model] model = "name"`. The [model] keys its builder reads are
    declared in flexunet/config/catalog.py (MODEL_KEYS), where config validates files without importing models."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        if name not in MODEL_KEYS:
            raise ValueError(f"model {name!r}: declare the [model] keys it reads in MODEL_KEYS, "
                             "flexunet/config/catalog.py")
        MODELS[name] = builder
        return builder

    return add


def build_model(section: ModelSection) -> nn.Module:
    """The network named by [model] model, built from the section's keys. Outputs logits (N, C, H, W)."""
    name = canonical_model_name(section.model)
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose one of {', '.join(sorted(MODELS))}"
        raise ConfigError(f"{section.where('model')} = {section.model!r}: unknown model{hint}")
    try:
        model = MODELS[name](section)
    except (MemoryError, RuntimeError) as exc:  # e.g. widths under the config's bound, on a small machine
        if isinstance(exc, RuntimeError) and "can't allocate memory" not in str(exc):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(exc))
        need = f"{int(asked.group(1)) / 1e9:.1f} GB for one tensor" if asked else "MemoryError"
        raise ConfigError(f"{section.where('model')} = {section.model!r}: its weights do not fit in this machine's "
                          f"memory ({need}); use a smaller base_filters or num_layers") from None
    if section.pretrained_weights:
        report = load_pretrained(model, Path(section.pretrained_weights))
        if not report.is_complete:
            # a partial load is normal when fine-tuning (another head, an encoder-only file), so warn, not fail
            warnings.warn(f"{section.where('pretrained_weights')}: {report}", stacklevel=2)
    return model


def read_state_dict(path: Path, noun: str) -> dict[str, torch.Tensor]:
    """The parameter name -> tensor dict of an existing weights file: safetensors by its suffix, else a torch file
    read with weights_only (data, never code), unwrapped from a flexunet checkpoint or a `state_dict` layout.
    Unreadable: CheckpointError "<path>: not a readable <noun>"."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    # arbitrary bytes fail in arbitrary ways (SafetensorError, IndexError, KeyError, struct.error, ...): all mean
    # "not a weights file"
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable {noun} ({load_problem(exc)})") from None
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):  # a flexunet checkpoint, or a common training-script layout
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a dict of parameter name -> tensor)")
    return state


def load_problem(exc: Exception) -> str:
    """Why a weights file did not load, in one short line. torch's weights_only refusal starts with advice to load
    with weights_only=False (which would run the file's code), so only its actual reason is shown."""
    text = str(exc)
    refused = "WeightsUnpickler error:" in text
    lines = [line.strip() for line in text.partition("WeightsUnpickler error:")[2 if refused else 0].splitlines()
             if line.strip()]
    first = re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else ""
    if refused:
        first = first.split(" Please use ")[0][:120]  # the rest offers ways to allowlist the file's code
        return f"it holds more than tensors and plain data: {first}; weights are read as data, never code"
    if isinstance(exc, (LookupError, EOFError, struct.error)) or not first:  # a bare "101" or "pop from empty list"
        return f"not a torch or safetensors weights file: {type(exc).__name__}" + (f" {first[:80]}" if first else "")
    return first[:200]


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
    state = read_state_dict(path, "state_dict")
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
