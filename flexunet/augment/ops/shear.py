"""[augmentor] shears: shear by one of the factors, with shear_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import AffineOp, Draw
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Shear(AffineOp):
    factors: tuple[float, ...]
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Shear | None:
        a = cfg.augmentor
        return cls(tuple(a.shears), a.shear_probability) if a.shears else None

    def matrices(self, draw: Draw) -> tuple[Tensor, Tensor]:
        on = draw.chance(self.probability)
        return geometry.shear_matrices(draw.pick(self.factors) * on), on
