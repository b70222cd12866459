"""Segmentation networks by name. Each architecture module below registers itself when imported."""
from flexunet.models import (  # noqa: F401  (each registers its builder under the name in its file)
    attention_unet,
    flexunet,
    multires_unet,
    sharp_unet,
    smp_models,
    swin_unet,
    trans_unet,
    u2net,
    unet3plus,
)
from flexunet.models.registry import (
    COMMON_MODEL_KEYS,
    MODEL_KEYS,
    MODELS,
    PretrainedReport,
    build_model,
    load_pretrained,
    register_model,
)

__all__ = [
    "COMMON_MODEL_KEYS", "MODELS", "MODEL_KEYS", "PretrainedReport", "build_model", "load_pretrained", "register_model",
]
