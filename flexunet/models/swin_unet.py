"""Swin UNet, the seed's TensorFlowFlexSwinUNet, built from MONAI's SwinUNETR (Hatamizadeh et al. 2022).

Not the seed's exact network: the seed (keras-unet-collection) decodes with Swin blocks too, SwinUNETR with conv
blocks; the encoder (shifted-window attention, four stages, patch merging) is the same. Seed keys map as:
filter_num_begin -> feature_size, stack_num_down -> blocks per stage, num_heads -> heads per stage, num_mlp ->
MLP width, window_size -> window (one for all stages: the first if a list), dropout_rate -> dropout.
SwinUNETR embeds 2x2 patches and has exactly 4 stages, so patch_size must be (2, 2), depth 4, and the image
divisible by 2**5 = 32. MONAI needs the einops package for this network.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError
from flexunet.models.layers import require_divisible
from flexunet.models.registry import register_model

if TYPE_CHECKING:  # MONAI itself loads only when the model is built
    from monai.networks.nets import SwinUNETR

STAGES = 4
DEFAULT_HEADS = (4, 8, 8, 8)  # the seed's default


def as_list(value: int | list[int] | None, default: tuple[int, ...]) -> list[int]:
    """A per-stage key given as one int or a list."""
    if value is None:
        return list(default)
    return [value] * STAGES if isinstance(value, int) else list(value)


@register_model("swin_unet")
def build_swin_unet(section: ModelSection) -> SwinUNETR:
    problems = []
    feature = section.filter_num_begin
    heads = as_list(section.num_heads, DEFAULT_HEADS)
    window = as_list(section.window_size, (4,))[0]
    if importlib.util.find_spec("einops") is None:
        problems.append(f"{section.where('model')} = {section.model!r}: needs the einops package; pip install einops")
    if section.depth != STAGES:
        problems.append(f"{section.where('depth')} = {section.depth}: SwinUNETR has exactly {STAGES} stages; set 4")
    if tuple(section.patch_size) != (2, 2):
        problems.append(f"{section.where('patch_size')} = {section.patch_size}: "
                        "SwinUNETR embeds 2x2 patches; set (2, 2)")
    if feature % 12:
        problems.append(
            f"{section.where('filter_num_begin')} = {feature}: "
            f"must be divisible by 12; try {max(12, feature // 12 * 12)}"
        )
    if len(heads) != STAGES or any((feature * 2**i) % h for i, h in enumerate(heads)):
        problems.append(
            f"{section.where('num_heads')} = {section.num_heads}: give {STAGES} head counts, stage i's dividing "
            f"filter_num_begin * 2**i; try {list(DEFAULT_HEADS)} with filter_num_begin = 96"
        )
    if problems:
        raise ConfigError(problems)
    require_divisible(section, STAGES + 1)
    from monai.networks.nets import SwinUNETR  # MONAI loads only when this model is built

    return SwinUNETR(
        in_channels=section.image_channels,
        out_channels=section.num_classes,
        spatial_dims=2,
        patch_size=2,
        feature_size=feature,
        depths=(section.stack_num_down,) * STAGES,
        num_heads=heads,
        window_size=window,
        mlp_ratio=(section.num_mlp or 4 * feature) / feature,
        drop_rate=section.dropout_rate,
    )
