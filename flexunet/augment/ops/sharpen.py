"""[augmentor] sharpening: unsharp masking with [sharpening] k, images only, with sharpening_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import intensity
from flexunet.augment.ops.base import Draw, IntensityOp
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Sharpen(IntensityOp):
    k: float
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Sharpen | None:
        a = cfg.augmentor
        return cls(cfg.sharpening.k, a.sharpening_probability) if a.sharpening else None

    def apply(self, draw: Draw, images: Tensor) -> None:
        idx = draw.chance(self.probability).nonzero()[:, 0]
        images[idx] = intensity.sharpen(images[idx], self.k)
