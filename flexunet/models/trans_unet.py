"""TransUNet (Chen et al. 2021), the seed's TensorFlowFlexTransUNet: a CNN UNet with a ViT at the bottleneck.

The CNN encoder keeps the fine detail for the skips; at the coarsest level every pixel becomes a token, a stack
of transformer layers (pre-norm, as ViT) mixes them globally, and the UNet decoder goes back up. Seed keys:
filter_num (default base_filters * 2**i, 4 levels), stack_num_down/up, embed_dim, num_heads, num_mlp,
num_transformer, mlp_activation, batch_norm, pool (max-pool, else strided conv) and unpool (bilinear, else
ConvTranspose; the seed read it from `pool`, bug 34). Keras-applications backbones are not offered (`backbone`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError
from flexunet.models.layers import check_unet_keys, make_activation, resize_to
from flexunet.models.registry import register_model


def conv_stack(cin: int, cout: int, count: int, batch_norm: bool, activation: str) -> nn.Sequential:
    """`count` 3x3 convs, each with an optional BatchNorm (the seed's `batch_norm` key) and the activation."""
    layers: list[nn.Module] = []
    for i in range(count):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
        layers += [nn.BatchNorm2d(cout)] if batch_norm else []
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class ViTBottleneck(nn.Module):
    """Pixels of the coarsest map -> tokens + learned positions -> transformer layers -> back to a map."""

    def __init__(
        self, channels: int, grid: tuple[int, int], embed_dim: int, num_heads: int, num_mlp: int,
        num_transformer: int, dropout: float, mlp_activation: str,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.embed = nn.Conv2d(channels, embed_dim, 1)
        self.position = nn.Parameter(torch.zeros(1, embed_dim, *grid))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, num_mlp, dropout, make_activation(mlp_activation), batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_transformer, nn.LayerNorm(embed_dim),
                                                 enable_nested_tensor=False)
        self.project = nn.Conv2d(embed_dim, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, h, w)
        n, _, h, w = x.shape
        position = self.position if (h, w) == self.grid else resize_to(self.position, (h, w))  # other input sizes
        tokens = (self.embed(x) + position).flatten(2).transpose(1, 2)  # (N, h*w, E)
        tokens = self.transformer(tokens)
        return self.project(tokens.transpose(1, 2).reshape(n, -1, h, w))


class TransUNet(nn.Module):
    """CNN encoder, ViT bottleneck, UNet decoder; returns logits (N, num_classes, H, W)."""

    def __init__(
        self, in_channels: int, num_classes: int, filters: list[int], bottleneck: ViTBottleneck, stack_down: int,
        stack_up: int, batch_norm: bool, pool: bool, unpool: bool, activation: str,
    ) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, f in enumerate(filters):
            cin = in_channels if i == 0 else filters[i - 1] if pool else f  # a strided conv already widened it
            self.down.append(conv_stack(cin, f, stack_down, batch_norm, activation))
            if i < len(filters) - 1:
                self.downsample.append(nn.MaxPool2d(2) if pool else nn.Conv2d(f, filters[i + 1], 2, stride=2))
        self.vit = bottleneck
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(len(filters) - 2, -1, -1):
            cin = filters[i + 1]
            self.up.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, filters[i], 1))
                if unpool else nn.ConvTranspose2d(cin, filters[i], 2, stride=2)
            )
            self.merge.append(conv_stack(2 * filters[i], filters[i], stack_up, batch_norm, activation))
        self.head = nn.Conv2d(filters[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.downsample[i - 1](x)
            x = block(x)
            skips.append(x)
        x = self.vit(skips.pop())
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)  # logits (N, num_classes, H, W)


@register_model("trans_unet")
def build_trans_unet(section: ModelSection) -> TransUNet:
    filters = section.filter_num or [section.base_filters * 2**i for i in range(4)]
    heads = section.num_heads if section.num_heads is not None else 12
    problems = []
    if not isinstance(heads, int) or section.embed_dim % heads:
        problems.append(
            f"{section.where('num_heads')} = {heads}: TransUNet needs one head count dividing embed_dim = "
            f"{section.embed_dim}; try 12 with embed_dim = 768"
        )
    if section.backbone:
        problems.append(f"{section.where('backbone')} = {section.backbone!r}: no Keras backbones here; remove the key")
    if problems:
        raise ConfigError(problems)
    check_unet_keys(section, len(filters), "filter_num")
    try:
        make_activation(section.mlp_activation)
    except ConfigError as exc:
        raise ConfigError(f"{section.where('mlp_activation')}: {exc}") from None
    step = 2 ** (len(filters) - 1)
    assert isinstance(heads, int)  # a list was reported above
    bottleneck = ViTBottleneck(
        filters[-1], (section.image_height // step, section.image_width // step), section.embed_dim, heads,
        section.num_mlp or 4 * section.embed_dim, section.num_transformer, section.dropout_rate, section.mlp_activation,
    )
    return TransUNet(
        section.image_channels, section.num_classes, filters, bottleneck, section.stack_num_down, section.stack_num_up,
        section.batch_norm, section.pool, section.pool if section.unpool is None else section.unpool,
        section.activation,
    )
