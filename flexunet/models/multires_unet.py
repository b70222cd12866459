"""MultiResUNet (Ibtehaz & Rahman 2020), the seed's TensorFlowFlexMultiResUNet.

A MultiRes block replaces the two 3x3 convs of a UNet level by three chained 3x3 convs (whose outputs see 3x3,
5x5 and 7x7 windows) concatenated, plus a 1x1 shortcut. A ResPath of residual convs carries each skip, longer at
the high-resolution levels, to narrow the semantic gap between encoder and decoder features.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import ConvNormAct, check_unet_keys, make_activation
from flexunet.models.registry import register_model

ALPHA = 1.67  # width multiplier of the paper (and the seed)


class MultiResBlock(nn.Module):
    """Three chained 3x3 convs of W/6, W/3, W/2 filters (W = ALPHA * filters), concatenated, plus a 1x1 shortcut."""

    def __init__(self, cin: int, filters: int, activation: str) -> None:
        super().__init__()
        width = ALPHA * filters
        c1, c2, c3 = (max(1, int(width * share)) for share in (1 / 6, 1 / 3, 1 / 2))
        self.out_channels = c1 + c2 + c3
        self.shortcut = nn.Sequential(nn.Conv2d(cin, self.out_channels, 1, bias=False),
                                      nn.BatchNorm2d(self.out_channels))
        self.conv3 = ConvNormAct(cin, c1, 3, activation=activation)
        self.conv5 = ConvNormAct(c1, c2, 3, activation=activation)
        self.conv7 = ConvNormAct(c2, c3, 3, activation=activation)
        self.norm_cat = nn.BatchNorm2d(self.out_channels)
        self.norm_out = nn.BatchNorm2d(self.out_channels)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        return self.norm_out(self.act(self.norm_cat(torch.cat([a, b, c], dim=1)) + self.shortcut(x)))


class ResPath(nn.Module):
    """`length` residual units (3x3 conv + 1x1 shortcut) applied to a skip before the decoder uses it."""

    def __init__(self, channels: int, filters: int, length: int, activation: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(length):
            cin = channels if i == 0 else filters
            self.convs.append(ConvNormAct(cin, filters, 3, activation=activation))
            self.shortcuts.append(nn.Sequential(nn.Conv2d(cin, filters, 1, bias=False), nn.BatchNorm2d(filters)))
            self.norms.append(nn.BatchNorm2d(filters))
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        for conv, shortcut, norm in zip(self.convs, self.shortcuts, self.norms, strict=True):
            x = norm(self.act(conv(x) + shortcut(x)))
        return x


class MultiResUNet(nn.Module):
    """MultiRes blocks down and up, ResPath skips, ConvTranspose upsampling; returns logits (N, num_classes, H, W)."""

    def __init__(self, in_channels: int, num_classes: int, base_filters: int, num_layers: int, activation: str) -> None:
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        self.down = nn.ModuleList()
        self.paths = nn.ModuleList()
        cin = in_channels
        for i, f in enumerate(filters):
            block = MultiResBlock(cin, f, activation)
            self.down.append(block)
            cin = block.out_channels
            if i < num_layers - 1:
                self.paths.append(ResPath(cin, f, num_layers - 1 - i, activation))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(num_layers - 2, -1, -1):
            self.up.append(nn.ConvTranspose2d(cin, filters[i], 2, stride=2))
            block = MultiResBlock(2 * filters[i], filters[i], activation)
            self.merge.append(block)
            cin = block.out_channels
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.paths):
                skips.append(self.paths[i](x))
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)  # logits (N, num_classes, H, W)


@register_model("multires_unet")
def build_multires_unet(section: ModelSection) -> MultiResUNet:
    check_unet_keys(section, section.num_layers)
    return MultiResUNet(
        section.image_channels, section.num_classes, section.base_filters, section.num_layers, section.activation
    )
