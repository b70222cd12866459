"""Segmentation networks by name. Each architecture module below registers itself when imported."""
from flexunet.models import flexunet  # noqa: F401  (registers "flexunet")
from flexunet.models.registry import MODELS, build_model, register_model

__all__ = ["MODELS", "build_model", "register_model"]
