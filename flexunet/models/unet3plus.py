"""UNet 3+ (Huang et al. 2020), the seed's TensorFlowFlexUNet3Plus, without deep supervision.

Every decoder level gathers all scales: the finer encoder maps max-pooled down, the same-level encoder map, and
the coarser decoder maps upsampled, each squeezed to base_filters channels, concatenated and fused. The seed fixed
5 levels and put one softmax channel on top (constant 1, bug 32); here num_layers levels and num_classes logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.models.layers import ConvNormAct, ConvStack, check_unet_keys, resize_to
from flexunet.models.registry import register_model


class UNet3Plus(nn.Module):
    """Full-scale skip connections; returns logits (N, num_classes, H, W)."""

    def __init__(
        self, in_channels: int, num_classes: int, base_filters: int, num_layers: int, dropout_rate: float,
        activation: str,
    ) -> None:
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        self.down = nn.ModuleList(
            ConvStack(in_channels if i == 0 else filters[i - 1], f, 2, activation=activation, dropout=dropout_rate * i)
            for i, f in enumerate(filters)
        )
        cat = base_filters  # channels each scale contributes to a decoder level
        fused = cat * num_layers
        # squeeze[d][s]: the conv taking scale s (encoder if s <= d, else decoder) to decoder level d
        self.squeeze = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for d in range(num_layers - 1):
            sources = [filters[s] if s <= d or s == num_layers - 1 else fused for s in range(num_layers)]
            self.squeeze.append(nn.ModuleList(ConvNormAct(c, cat, 3, activation=activation) for c in sources))
            self.fuse.append(ConvNormAct(fused, fused, 3, activation=activation))
        self.head = nn.Conv2d(fused, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        enc = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            enc.append(x)
        levels = len(enc)
        dec: dict[int, Tensor] = {levels - 1: enc[-1]}  # the bottleneck is the coarsest "decoder" map
        for d in range(levels - 2, -1, -1):
            size = enc[d].shape[-2:]
            parts = []
            for s, squeeze in enumerate(self.squeeze[d].children()):  # a ModuleList: its items in order
                if s < d:
                    parts.append(squeeze(F.max_pool2d(enc[s], 2 ** (d - s))))
                elif s == d:
                    parts.append(squeeze(enc[s]))
                else:
                    parts.append(squeeze(resize_to(dec[s], size)))
            dec[d] = self.fuse[d](torch.cat(parts, dim=1))
        return self.head(dec[0])  # logits (N, num_classes, H, W)


@register_model("unet3plus")
def build_unet3plus(section: ModelSection) -> UNet3Plus:
    check_unet_keys(section, section.num_layers)
    return UNet3Plus(
        section.image_channels, section.num_classes, section.base_filters, section.num_layers,
        section.dropout_rate, section.activation,
    )
