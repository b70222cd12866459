"""EfficientNet-UNet, the seed's TensorFlowFlexEfficientUNet, built from MONAI's FlexibleUNet.

An EfficientNet B0..B7 encoder ([model] efficientnet) with a UNet decoder of 16, 8, 4, 2, 1 x base_filters
channels (base_filters = 16 gives MONAI's default 256..16). The encoder starts from random weights: ImageNet
weights would need a download (bug 35); give a local file as [model] pretrained_weights instead. The seed had a
1-channel sigmoid head for 2 classes and a NameError for B6 (bug 33); here every variant gives num_classes logits.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError
from flexunet.models.layers import require_divisible
from flexunet.models.registry import register_model

if TYPE_CHECKING:  # MONAI itself loads only when the model is built
    from monai.networks.nets import FlexibleUNet

VARIANTS = tuple(f"B{i}" for i in range(8))


def build_efficientnet_unet(section: ModelSection, variant: str) -> FlexibleUNet:
    """FlexibleUNet with the EfficientNet `variant` ("B0".."B7") encoder, without the classifier it never uses."""
    from monai.networks.nets import FlexibleUNet  # MONAI loads only when this model is built

    require_divisible(section, 5)
    b = section.base_filters
    model = FlexibleUNet(
        in_channels=section.image_channels,
        out_channels=section.num_classes,
        backbone=f"efficientnet-{variant.lower()}",
        pretrained=False,  # never download
        decoder_channels=(16 * b, 8 * b, 4 * b, 2 * b, b),
        spatial_dims=2,
        dropout=section.dropout_rate,
    )
    # the encoder keeps EfficientNet's classifier (head conv, BN, fc) but never calls it: drop the dead weights
    model.encoder._conv_head = model.encoder._bn1 = model.encoder._fc = None
    # MONAI's EfficientNet uses TF's BatchNorm momentum 0.01: from random weights its running statistics lag the
    # training ones for thousands of steps, and the model predicts nothing in eval mode (test IoU 0 after 160 steps)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model


# [model] keys this builder reads beyond COMMON_MODEL_KEYS (flexunet/models/registry.py)
EFFICIENT_UNET_KEYS = frozenset({"base_filters", "dropout_rate", "efficientnet"})


@register_model("efficient_unet", EFFICIENT_UNET_KEYS)
def build_efficient_unet(section: ModelSection) -> FlexibleUNet:
    variant = section.efficientnet.strip().upper().removeprefix("EFFICIENTNET").strip("-_")
    if variant not in VARIANTS:
        raise ConfigError(f"{section.where('efficientnet')} = {section.efficientnet!r}: "
                          f"choose one of {', '.join(VARIANTS)}")
    return build_efficientnet_unet(section, variant)
