"""[augmentor] barrdistortion / pincdistortion: barrel (amount > 0) or pincushion (amount < 0) lens distortion
around one of the centres, from the [barrdistortion] / [pincdistortion] sections."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import Draw, FieldOp, positive
from flexunet.config.augmentation import RadialDistortionSection
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Lens(FieldOp):
    """The radius is a fraction of W, the centres (x, y) fractions of the image."""

    radius: float
    amount: float
    centres: tuple[tuple[float, float], ...]
    probability: float = 0.25

    @classmethod
    def from_section(cls, section: RadialDistortionSection, on: bool, probability: float) -> Lens | None:
        positive(section.where("radius"), [section.radius])
        if not on:
            return None
        return cls(section.radius, section.amount, tuple((x, y) for x, y in section.centers), probability)

    def add_displacement(self, draw: Draw, total: Tensor) -> Tensor:
        height, width = total.shape[1:3]
        on, which = draw.chance(self.probability), draw.index(len(self.centres))
        centres = torch.tensor(self.centres, device=draw.device, dtype=torch.float32)[which]  # (N, 2)
        idx = on.nonzero()[:, 0]
        total[idx] += geometry.radial_displacement(centres[idx], self.radius, self.amount, height, width)
        return on


@dataclass(frozen=True)
class Barrel(Lens):
    @classmethod
    def from_config(cls, cfg: Config) -> Lens | None:
        a = cfg.augmentor
        return cls.from_section(cfg.barrdistortion, a.barrdistortion, a.barrdistortion_probability)


@dataclass(frozen=True)
class Pincushion(Lens):
    @classmethod
    def from_config(cls, cfg: Config) -> Lens | None:
        a = cfg.augmentor
        return cls.from_section(cfg.pincdistortion, a.pincdistortion, a.pincdistortion_probability)
