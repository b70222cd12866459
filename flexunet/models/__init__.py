"""Segmentation networks by name. Every architecture module in this package registers itself when imported, and all
of them are imported here: adding a model is its file plus its line in config/catalog.py's MODEL_KEYS."""
import importlib
import pkgutil

from flexunet.config.catalog import COMMON_MODEL_KEYS, MODEL_KEYS
from flexunet.models.registry import (
    MODELS,
    PretrainedReport,
    build_model,
    load_pretrained,
    register_model,
)

_NOT_ARCHITECTURES = {"registry", "layers", "inspect"}  # shared code, no builder
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_ARCHITECTURES:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "COMMON_MODEL_KEYS", "MODELS", "MODEL_KEYS", "PretrainedReport", "build_model", "load_pretrained", "register_model",
]
