"""[augmentor] brightening: alpha * image + beta (beta on the 0..255 scale), images only, with
brightening_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import intensity
from flexunet.augment.ops.base import Draw, IntensityOp
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Brighten(IntensityOp):
    alpha: float
    beta: float
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Brighten | None:
        a, b = cfg.augmentor, cfg.brightening
        return cls(b.alpha, b.beta, a.brightening_probability) if a.brightening else None

    def apply(self, draw: Draw, images: Tensor) -> None:
        idx = draw.chance(self.probability).nonzero()[:, 0]
        images[idx] = intensity.brighten(images[idx], self.alpha, self.beta)
