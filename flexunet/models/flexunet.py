"""The seed's configurable UNet (TensorFlowFlexUNet / TensorflowUNet), layer for layer.

Level i has base_filters * 2**i filters. Kernels shrink by 2 per level down to 3 and dilations by 1 down to 1,
so the large kernels sit at the high-resolution levels; the decoder mirrors them. Dropout grows with depth
(dropout_rate * level). The Pap-Smear config (16 filters, 7 levels, 3x3, 1 class) has 31,110,001 parameters,
the same as the seed's Keras summary.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import Conv2d, Dropout, make_activation, require_divisible
from flexunet.models.registry import register_model

Pair = tuple[int, int]


def level_kernels(base: Pair, levels: int) -> list[Pair]:
    """k_0 = base, k_{i+1} = max(3, k_i - 2) per axis: 9 -> 9, 7, 5, 3, 3, ..."""
    out = [base]
    for _ in range(levels - 1):
        out.append((max(3, out[-1][0] - 2), max(3, out[-1][1] - 2)))
    return out


def level_dilations(base: Pair, levels: int) -> list[Pair]:
    """d_0 = base, d_{i+1} = max(1, d_i - 1) per axis: 3 -> 3, 2, 1, 1, ..."""
    out = [base]
    for _ in range(levels - 1):
        out.append((max(1, out[-1][0] - 1), max(1, out[-1][1] - 1)))
    return out


class ConvPair(nn.Module):
    """conv -> act -> [BN] -> dropout -> conv -> act -> [BN], 'same' padding (BN after the activation, as the seed)."""

    def __init__(
        self, cin: int, cout: int, kernel: Pair, dilation: Pair, dropout: float, batch_norm: bool, activation: str
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, c in enumerate((cin, cout)):
            conv = Conv2d(c, cout, kernel, padding="same", dilation=dilation)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # Keras he_normal
            assert conv.bias is not None  # bias=True
            nn.init.zeros_(conv.bias)
            layers += [conv, make_activation(activation)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            if i == 0 and dropout > 0:
                layers.append(Dropout(dropout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class FlexUNet(nn.Module):
    """UNet with per-level kernels, dilations and dropout; returns logits (N, num_classes, H, W)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_filters: int = 16,
        num_layers: int = 6,
        base_kernels: Pair = (3, 3),
        dilation: Pair = (1, 1),
        dropout_rate: float = 0.05,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        kernels = level_kernels((base_kernels[0], base_kernels[1]), num_layers)  # a list works too
        dilations = level_dilations((dilation[0], dilation[1]), num_layers)
        self.down = nn.ModuleList()
        cin = in_channels
        for i, f in enumerate(filters):
            self.down.append(ConvPair(cin, f, kernels[i], dilations[i], dropout_rate * i, batch_norm, activation))
            cin = f
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for f in range(num_layers - 2, -1, -1):
            upconv = nn.ConvTranspose2d(filters[f + 1], filters[f], 2, stride=2)
            nn.init.xavier_uniform_(upconv.weight)  # Keras glorot_uniform
            assert upconv.bias is not None  # bias=True
            nn.init.zeros_(upconv.bias)
            self.up.append(upconv)
            self.merge.append(
                ConvPair(2 * filters[f], filters[f], kernels[f], dilations[f], dropout_rate * f, batch_norm, activation)
            )
        self.head = nn.Conv2d(filters[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W) in [0, 1]
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for upconv, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([upconv(x), skips.pop()], dim=1))
        return self.head(x)  # logits (N, num_classes, H, W)


@register_model("flexunet")
def build_flexunet(section: ModelSection) -> FlexUNet:
    require_divisible(section, section.num_layers - 1)
    make_activation(section.activation, section)  # fail early with the config location
    return FlexUNet(
        in_channels=section.image_channels,
        num_classes=section.num_classes,
        base_filters=section.base_filters,
        num_layers=section.num_layers,
        base_kernels=section.base_kernels,
        dilation=section.dilation,
        dropout_rate=section.dropout_rate,
        batch_norm=section.normalization,
        activation=section.activation,
    )
