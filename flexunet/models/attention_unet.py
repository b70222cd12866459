"""Attention UNet (Oktay et al. 2018), the seed's TensorFlowFlexAttentionUNet, built from MONAI's AttentionUnet.

Same design as the seed: two 3x3 conv-BN-ReLU per level, an additive attention gate that weights each skip by
the coarser decoder map, num_layers levels of base_filters * 2**i filters. MONAI ends with a 1x1 conv, so the
output is logits for any number of classes (the seed used sigmoid or softmax depending on the repo).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flexunet.config.schema import ModelSection
from flexunet.models.layers import require_divisible, require_levels
from flexunet.models.registry import register_model

if TYPE_CHECKING:  # MONAI itself loads only when the model is built
    from monai.networks.nets import AttentionUnet


@register_model("attention_unet")
def build_attention_unet(section: ModelSection) -> AttentionUnet:
    from monai.networks.nets import AttentionUnet  # MONAI loads only when this model is built

    require_levels(section, "num_layers", section.num_layers, 2)
    require_levels(section, "base_filters", section.base_filters, 2)  # the attention gates halve the channels
    require_divisible(section, section.num_layers - 1)
    return AttentionUnet(
        spatial_dims=2,
        in_channels=section.image_channels,
        out_channels=section.num_classes,
        channels=[section.base_filters * 2**i for i in range(section.num_layers)],
        strides=[2] * (section.num_layers - 1),
        dropout=section.dropout_rate,
    )
