"""EfficientNetB7-UNet, the seed's TensorFlowFlexEfficientNetB7UNet: the EfficientNet-UNet with its B7 encoder.

The seed's separate class differed only in freezing all but the last 61 encoder layers (pointless without
ImageNet weights) and in always having one output channel (bug 33); here it outputs num_classes logits.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flexunet.config.schema import ModelSection
from flexunet.models.efficient_unet import build_efficientnet_unet
from flexunet.models.registry import register_model

if TYPE_CHECKING:  # MONAI itself loads only when the model is built
    from monai.networks.nets import FlexibleUNet


# [model] keys this builder reads beyond COMMON_MODEL_KEYS (flexunet/models/registry.py)
EFFICIENTNET_B7_UNET_KEYS = frozenset({"base_filters", "dropout_rate"})


@register_model("efficientnet_b7_unet", EFFICIENTNET_B7_UNET_KEYS)
def build_efficientnet_b7_unet(section: ModelSection) -> FlexibleUNet:
    return build_efficientnet_unet(section, "B7")
