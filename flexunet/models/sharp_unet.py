"""Sharp U-Net (Zunair & Hamza 2021), the seed's TensorFlowFlexSharpUNet.

A plain UNet whose skips pass through a fixed depthwise sharpening filter before being concatenated: encoder
features are smoother than the upsampled decoder features, and sharpening them first reduces the mismatch and
the early-training artefacts. The kernel is a buffer, not a parameter, so training never changes it.
Keys: filters (default base_filters * 2**i, 4 levels), max_filter (caps the bottleneck width at 2 * filters[-1]),
base_ksize (conv kernel) and dilation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import ConvStack, Kernel, make_activation, require_divisible
from flexunet.models.registry import register_model

SHARPEN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 9.0, -1.0], [-1.0, -1.0, -1.0]])  # identity + Laplacian


class Sharpen(nn.Module):
    """The same fixed 3x3 sharpening kernel on every channel (a depthwise conv)."""

    kernel: Tensor  # (C, 1, 3, 3) buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", SHARPEN.expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


class SharpUNet(nn.Module):
    """UNet with sharpened skips; returns logits (N, num_classes, H, W)."""

    def __init__(
        self, in_channels: int, num_classes: int, filters: list[int], kernel: Kernel, dilation: Kernel,
        dropout_rate: float, activation: str,
    ) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = in_channels
        for i, f in enumerate(filters):
            self.down.append(ConvStack(cin, f, 2, kernel, dilation, activation, dropout_rate * i))
            cin = f
        self.sharpen = nn.ModuleList(Sharpen(f) for f in filters[:-1])
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.merge = nn.ModuleList(
            ConvStack(filters[i + 1] + filters[i], filters[i], 2, kernel, dilation, activation, dropout_rate * i)
            for i in range(len(filters) - 2, -1, -1)
        )
        self.head = nn.Conv2d(filters[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.sharpen):
                skips.append(self.sharpen[i](x))
                x = self.pool(x)
        for merge in self.merge:
            x = merge(torch.cat([self.upsample(x), skips.pop()], dim=1))
        return self.head(x)  # logits (N, num_classes, H, W)


@register_model("sharp_unet")
def build_sharp_unet(section: ModelSection) -> SharpUNet:
    filters = list(section.filters or [section.base_filters * 2**i for i in range(4)])
    filters.append(min(section.max_filter, 2 * filters[-1]))  # the bottleneck
    require_divisible(section, len(filters) - 1)
    make_activation(section.activation, section)  # fail early with the config location
    return SharpUNet(
        section.image_channels, section.num_classes, filters, section.base_ksize, section.dilation,
        section.dropout_rate, section.activation,
    )
