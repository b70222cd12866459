"""DeepLabV3+ (Chen et al. 2018) on a ResNet-50 encoder, the seed's TensorFlowFlexDeepLabV3Plus.

As in the seed (the Keras example): encoder = ResNet-50 stem and stages 1-3 (output stride 16), ASPP with a 1x1
branch, 3x3 branches at rates 6, 12, 18 and image pooling, then x4 upsampling, a projected stride-4 skip from
stage 1, two 3x3 convs and x4 back to the input. Widths scale with base_filters (64 = the real ResNet-50, ASPP
256, skip 48). The encoder's parameter names are torchvision's (conv1, bn1, layer1..layer3), so a converted
ImageNet state_dict can be given as [model] pretrained_weights (its layer4 and fc are reported as unexpected).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import (
    ConvNormAct,
    make_activation,
    require_divisible,
    resize_to,
)
from flexunet.models.registry import register_model

RESNET50_BLOCKS = (3, 4, 6)  # stages 1-3 of ResNet-50; stage 4 is not used (output stride 16)
ASPP_RATES = (6, 12, 18)
EXPANSION = 4  # a bottleneck's output is 4x its width (MONAI's ResNetBottleneck.expansion; a test checks)


def resnet_stage(cin: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` bottlenecks (1x1, 3x3, 1x1 with 4x expansion); the first may stride and projects its shortcut."""
    from monai.networks.nets.resnet import ResNetBottleneck  # MONAI loads only when this model is built

    cout = planes * EXPANSION
    shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    layers = [ResNetBottleneck(cin, planes, spatial_dims=2, stride=stride, downsample=shortcut)]
    layers += [ResNetBottleneck(cout, planes, spatial_dims=2) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: context at several rates plus the global mean, fused by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, activation: str) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvNormAct(cin, cout, 1, activation=activation)]
            + [ConvNormAct(cin, cout, 3, rate, activation) for rate in ASPP_RATES]
        )
        # no BatchNorm after global pooling: one value per channel and image breaks it at batch size 1
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), make_activation(activation))
        self.project = ConvNormAct(cout * (len(ASPP_RATES) + 2), cout, 1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """ResNet-50 (stages 1-3) + ASPP + stride-4 skip decoder; returns logits (N, num_classes, H, W)."""

    def __init__(self, in_channels: int, num_classes: int, width: int, activation: str) -> None:
        super().__init__()
        expansion = EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = resnet_stage(width, width, RESNET50_BLOCKS[0], stride=1)
        self.layer2 = resnet_stage(width * expansion, 2 * width, RESNET50_BLOCKS[1], stride=2)
        self.layer3 = resnet_stage(2 * width * expansion, 4 * width, RESNET50_BLOCKS[2], stride=2)
        self.aspp = ASPP(4 * width * expansion, 4 * width, activation)
        skip = max(8, 3 * width // 4)
        self.skip = ConvNormAct(width * expansion, skip, 1, activation=activation)
        self.decoder = nn.Sequential(
            ConvNormAct(4 * width + skip, 4 * width, 3, activation=activation),
            ConvNormAct(4 * width, 4 * width, 3, activation=activation),
        )
        self.head = nn.Conv2d(4 * width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        size = x.shape[-2:]
        x0 = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)  # stride 4
        x1 = self.layer1(x0)  # stride 4, the low-level skip
        x3 = self.layer3(self.layer2(x1))  # stride 16
        u = resize_to(self.aspp(x3), x1.shape[-2:])
        u = self.decoder(torch.cat([u, self.skip(x1)], dim=1))
        return resize_to(self.head(u), size)  # logits (N, num_classes, H, W)


# [model] keys this builder reads beyond COMMON_MODEL_KEYS (flexunet/models/registry.py)
DEEPLABV3PLUS_KEYS = frozenset({"base_filters", "activation"})


@register_model("deeplabv3plus", DEEPLABV3PLUS_KEYS)
def build_deeplabv3plus(section: ModelSection) -> DeepLabV3Plus:
    require_divisible(section, 4)
    make_activation(section.activation, section)  # fail early with the config location
    return DeepLabV3Plus(section.image_channels, section.num_classes, section.base_filters, section.activation)
