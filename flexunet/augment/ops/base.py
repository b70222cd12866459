"""What an augmentation operation is: drawn per sample from one generator, in one of three kinds.

- `AffineOp.matrices`: (N, 2, 2) pixel-unit output -> source maps (composed in registry order) and who moved;
- `FieldOp.add_displacement`: adds (N, H, W, 2) pixel displacements to a running total, returns who moved;
- `IntensityOp.apply`: changes images only (labels untouched).
Image and labels are resampled once, on the grid that all affine and field operations make together. Each
operation builds itself from the config (`from_config` returns None when it is off).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from flexunet.augment import geometry
from flexunet.config.schema import Config
from flexunet.errors import ConfigError

Kind = Literal["affine", "field", "intensity"]


class Draw:
    """Random draws for one batch, made on the generator's device and moved to the batch's device."""

    def __init__(self, generator: torch.Generator, n: int, device: torch.device) -> None:
        self.generator, self.n, self.device = generator, n, device

    def chance(self, probability: float) -> Tensor:
        """(N,) bool, True with `probability`."""
        return self._rand(self.n) < probability

    def index(self, count: int) -> Tensor:
        """(N,) long, uniform in [0, count)."""
        return torch.randint(count, (self.n,), generator=self.generator, device=self.generator.device).to(self.device)

    def pick(self, values: tuple[float, ...]) -> Tensor:
        """(N,) float, one of `values` per sample."""
        return torch.tensor(values, dtype=torch.float32, device=self.device)[self.index(len(values))]

    def noise(self, k: int, height: int, width: int, sigma: float) -> Tensor:
        """(k, 2, h + 2r, w + 2r) standard normal noise on the coarse grid of a field with pixel smoothness sigma."""
        h, w, _, r = geometry.coarse_shape(height, width, sigma)
        shape = (k, 2, h + 2 * r, w + 2 * r)
        return torch.randn(shape, generator=self.generator, device=self.generator.device).to(self.device)

    def _rand(self, k: int) -> Tensor:
        return torch.rand(k, generator=self.generator, device=self.generator.device).to(self.device)


class AugmentOp:
    """An operation switched on by the config; `kind` says which of the three methods below it has."""

    kind: ClassVar[Kind]

    @classmethod
    def from_config(cls, cfg: Config) -> AugmentOp | None:
        """The operation with its config values, or None when the config leaves it off."""
        raise NotImplementedError


class AffineOp(AugmentOp):
    kind: ClassVar[Kind] = "affine"

    def matrices(self, draw: Draw) -> tuple[Tensor, Tensor]:
        """(N, 2, 2) pixel-unit output -> source maps and the (N,) samples they move."""
        raise NotImplementedError


class FieldOp(AugmentOp):
    kind: ClassVar[Kind] = "field"

    def add_displacement(self, draw: Draw, total: Tensor) -> Tensor:
        """Add (N, H, W, 2) pixel displacements to `total`; the (N,) samples moved."""
        raise NotImplementedError


class IntensityOp(AugmentOp):
    kind: ClassVar[Kind] = "intensity"

    def apply(self, draw: Draw, images: Tensor) -> None:
        """Change some of the (N, C, H, W) images in place."""
        raise NotImplementedError


def positive(where: str, values: list[float] | tuple[float, ...]) -> None:
    """A value that would divide by zero deep inside a warp is reported here, naming its key."""
    bad = [v for v in values if v <= 0]
    if bad:
        raise ConfigError(f"{where} = {bad[0]}: must be > 0")
