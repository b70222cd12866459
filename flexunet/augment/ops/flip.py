"""[augmentor] hflip / vflip: mirror left-right and top-bottom, each with flip_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import AffineOp, Draw
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Flip(AffineOp):
    horizontal: bool
    vertical: bool
    probability: float = 0.5

    @classmethod
    def from_config(cls, cfg: Config) -> Flip | None:
        a = cfg.augmentor
        return cls(a.hflip, a.vflip, a.flip_probability) if a.hflip or a.vflip else None

    def matrices(self, draw: Draw) -> tuple[Tensor, Tensor]:
        fx = draw.chance(self.probability) & self.horizontal
        fy = draw.chance(self.probability) & self.vertical
        return geometry.flip_matrices(fx, fy), fx | fy
