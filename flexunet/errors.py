"""Exceptions a user can act on. The CLI prints their message on one line and exits non-zero."""
from __future__ import annotations

import importlib
from types import ModuleType


class FlexunetError(Exception):
    """Base class: the message alone tells the user what is wrong and where."""


class ConfigError(FlexunetError):
    """A config file, section, key or value is wrong. Holds every problem found, one per line."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(FlexunetError):
    """An image or mask file is missing, unpaired, unreadable or of an unexpected shape."""


class CheckpointError(FlexunetError):
    """A checkpoint is missing, truncated, or does not fit the model described by the config."""


class TrainingError(FlexunetError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class OutputError(FlexunetError):
    """An output file or folder cannot be written (disk full, no permission) or would destroy a user's files."""


def require_extra(module: str, extra: str, need: str = "install the optional extra") -> ModuleType:
    """Import `module` of an optional extra lazily; missing, a FlexunetError saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FlexunetError(f"{module} is not installed; {need}: pip install 'flexunet[{extra}]'") from None
