"""Augmentation: random operations that transform image and mask together, on the training device.

The trainer calls `build_augmenter(cfg)` once and then `augmenter(images, labels, generator)` on every training
batch, never on validation batches. `preview_grid` and `augment_offline` back `flexunet augment`.
"""
from __future__ import annotations

from flexunet.augment.augmenter import Augmenter
from flexunet.augment.offline import augment_offline, preview_grid
from flexunet.augment.ops import Lens
from flexunet.config.schema import Config


def build_augmenter(cfg: Config) -> Augmenter | None:
    """The online augmenter of [augmentor], or None when [model] generator or [generator] augmentation is off."""
    if not cfg.model.generator or not cfg.generator.augmentation:
        return None
    return Augmenter.from_config(cfg)


__all__ = ["Augmenter", "Lens", "augment_offline", "build_augmenter", "preview_grid"]
