"""[augmentor] shrinks: scale the content by one of the ratios (the border is padded), with shrink_probability."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import AffineOp, Draw, positive
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Shrink(AffineOp):
    ratios: tuple[float, ...]
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Shrink | None:
        a = cfg.augmentor
        positive(a.where("shrinks"), a.shrinks)
        return cls(tuple(a.shrinks), a.shrink_probability) if a.shrinks else None

    def matrices(self, draw: Draw) -> tuple[Tensor, Tensor]:
        on = draw.chance(self.probability)
        return geometry.scale_matrices(torch.where(on, draw.pick(self.ratios), 1.0)), on
