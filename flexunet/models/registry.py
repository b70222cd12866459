"""Models by name: each architecture module registers one builder taking the [model] section."""
from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from flexunet.config.aliases import canonical_model_name
from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError

ModelBuilder = Callable[[ModelSection], nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make `name` selectable with `[model] model = "name"`."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
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
    return MODELS[name](section)
