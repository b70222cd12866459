"""[augmentor] distortion: a smooth random shift field whose largest shift is one of [distortion] distortions (a
fraction of the image size), smoothed by gaussian_filter_rsigma pixels, with distortion_probability."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops.base import Draw, FieldOp, positive
from flexunet.config.schema import Config


@dataclass(frozen=True)
class Distortion(FieldOp):
    sizes: tuple[float, ...]
    sigma: float = 40.0
    probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Distortion | None:
        d = cfg.distortion
        positive(d.where("gaussian_filter_rsigma"), [d.gaussian_filter_rsigma])
        if not cfg.augmentor.distortion:
            return None
        return cls(tuple(d.distortions), d.gaussian_filter_rsigma, cfg.augmentor.distortion_probability)

    def add_displacement(self, draw: Draw, total: Tensor) -> Tensor:
        height, width = total.shape[1:3]
        on, size = draw.chance(self.probability), draw.pick(self.sizes)
        idx = on.nonzero()[:, 0]
        noise = draw.noise(len(idx), height, width, self.sigma)
        field = geometry.distortion_displacement(noise, self.sigma, 1.0, height, width)
        total[idx] += field * size[idx].view(-1, 1, 1, 1)
        return on
