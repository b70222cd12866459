"""[augmentor] rotation: turn by one of `angles` degrees (anticlockwise), with rotation_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import AffineOp, Draw
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Rotation(AffineOp):
    angles: tuple[float, ...]
    probability: float = 0.5

    @classmethod
    def from_config(cls, cfg: Config) -> Rotation | None:
        a = cfg.augmentor
        return cls(tuple(a.angles), a.rotation_probability) if a.rotation and a.angles else None

    def matrices(self, draw: Draw) -> tuple[Tensor, Tensor]:
        on = draw.chance(self.probability)
        return geometry.rotation_matrices(draw.pick(self.angles) * on), on
