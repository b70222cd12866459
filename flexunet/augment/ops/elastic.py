"""[augmentor] deformation (or the seed's transformer): a smooth random elastic field, alpha pixels strong, with
one of the sigmas per sample, with deformation_probability. Where alpha and sigma come from is config/resolve.py's
choice (`cfg.resolved.elastic`)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import Draw, FieldOp, positive
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Elastic(FieldOp):
    alpha: float  # pixels, the seed's `alpah`
    sigmas: tuple[float, ...]  # pixels, the seed's `sigmoid(s)`
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Elastic | None:
        a, d = cfg.augmentor, cfg.deformation
        positive(d.where("sigmoids"), d.sigmoids)
        positive(d.where("sigmoid"), [d.sigmoid])
        positive(a.where("sigmoid"), [a.sigmoid])
        if not (a.deformation or a.transformer):
            return None
        sigmas: tuple[float, ...]
        if cfg.resolved.elastic == "augmentor":
            alpha, sigmas = a.alpha, (a.sigmoid,)
        elif cfg.resolved.elastic == "deformation_sigmoid":
            alpha, sigmas = d.alpha, (d.sigmoid,)
        else:
            alpha, sigmas = d.alpha, tuple(d.sigmoids) or (d.sigmoid,)
        return cls(alpha, sigmas, a.deformation_probability)

    def add_displacement(self, draw: Draw, total: Tensor) -> Tensor:
        height, width = total.shape[1:3]
        on, which = draw.chance(self.probability), draw.index(len(self.sigmas))
        for i, sigma in enumerate(self.sigmas):
            idx = (on & (which == i)).nonzero()[:, 0]
            noise = draw.noise(len(idx), height, width, sigma)
            total[idx] += geometry.elastic_displacement(noise, sigma, self.alpha, height, width)
        return on
