"""U^2-Net (Qin et al. 2020), the seed's TensorFlowFlexU2Net: a UNet whose every level is itself a small UNet.

Each level is a Residual U-block (RSU): a local encoder-decoder of `height` convs added to its input conv, so
every level sees both fine and coarse context. Deep levels, already small, use dilated RSU-4F blocks instead of
pooling. One side output per level is upsampled to the input and fused by a 1x1 conv. The output is the fused
logits; the seed put a sigmoid on it even for several classes under categorical CE (bug 34). Pooling rounds up
and decoders resize to their skip, so any input size works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import (
    ConvNormAct,
    make_activation,
    require_levels,
    resize_to,
)
from flexunet.models.registry import register_model


class RSU(nn.Module):
    """Residual U-block of `height` levels; `dilated` (RSU-4F) grows the dilation 1, 2, 4, ... instead of pooling."""

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool, activation: str) -> None:
        super().__init__()
        self.dilated = dilated
        dilations = [2**k if dilated else 1 for k in range(height - 1)]
        self.stem = ConvNormAct(cin, cout, 3, activation=activation)
        self.down = nn.ModuleList(
            ConvNormAct(cout if k == 0 else mid, mid, 3, dilations[k], activation) for k in range(height - 1)
        )
        self.bottom = ConvNormAct(mid, mid, 3, 2 * dilations[-1], activation)
        self.up = nn.ModuleList(
            ConvNormAct(2 * mid, cout if k == 0 else mid, 3, dilations[k], activation) for k in range(height - 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        skips = []
        h = x
        for k, conv in enumerate(self.down):
            if k and not self.dilated:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = conv(h)
            skips.append(h)
        h = self.bottom(h)
        for conv in reversed(self.up):
            skip = skips.pop()
            h = conv(torch.cat([resize_to(h, skip.shape[-2:]), skip], dim=1))
        return h + x


def level_block(level: int) -> tuple[int, bool]:
    """(height, dilated) of a level: RSU-7, -6, -5, -4, then RSU-4F, as in the paper's six-level network."""
    height = 7 - level
    return (height, False) if height >= 4 else (4, True)


class U2Net(nn.Module):
    """Nested UNet of RSU blocks with fused side outputs; returns logits (N, num_classes, H, W)."""

    def __init__(self, in_channels: int, num_classes: int, base_filters: int, num_layers: int, activation: str) -> None:
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        self.down = nn.ModuleList()
        for i, f in enumerate(filters):
            height, dilated = level_block(i)
            cin = in_channels if i == 0 else filters[i - 1]
            self.down.append(RSU(height, cin, max(1, f // 2), f, dilated, activation))
        self.up = nn.ModuleList()
        for i in range(num_layers - 1):
            height, dilated = level_block(i)
            self.up.append(RSU(height, filters[i + 1] + filters[i], max(1, filters[i] // 2), filters[i], dilated,
                               activation))
        self.sides = nn.ModuleList(nn.Conv2d(f, num_classes, 3, padding=1) for f in filters)
        self.fuse = nn.Conv2d(num_layers * num_classes, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        size = x.shape[-2:]
        enc = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2, ceil_mode=True) if i else x)
            enc.append(x)
        dec = [enc[-1]]  # coarsest first
        for i in range(len(enc) - 2, -1, -1):
            dec.insert(0, self.up[i](torch.cat([resize_to(dec[0], enc[i].shape[-2:]), enc[i]], dim=1)))
        sides = [resize_to(side(d), size) for side, d in zip(self.sides, dec, strict=True)]
        return self.fuse(torch.cat(sides, dim=1))  # logits (N, num_classes, H, W)


@register_model("u2net")
def build_u2net(section: ModelSection) -> U2Net:
    require_levels(section, "num_layers", section.num_layers, 2)
    make_activation(section.activation, section)  # fail early with the config location
    return U2Net(section.image_channels, section.num_classes, section.base_filters, section.num_layers,
                 section.activation)
