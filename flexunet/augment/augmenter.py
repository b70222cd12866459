"""Random augmentation of training batches: one sampling grid per sample, shared by image and mask.

The seed enumerated fixed variants (every angle, every shrink) and warped masks bilinearly with their own random
fields (bugs 11-14). Here each sample draws its own operations from a torch.Generator, the image and its labels are
resampled once on the same grid (bilinear for images, nearest for labels), and brightness/sharpness touch images only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexunet.augment import geometry, intensity
from flexunet.config.schema import Config, RadialDistortionSection
from flexunet.errors import ConfigError


@dataclass(frozen=True)
class Lens:
    """Barrel (amount > 0) or pincushion (amount < 0) distortion.

    The radius is a fraction of W, the centres (x, y) fractions of the image.
    """

    radius: float
    amount: float
    centres: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Augmenter:
    """Which operations may happen, with what chance and values; call it on a training batch.

    An empty value list (or None) switches an operation off, so `Augmenter()` changes nothing. Validation batches
    are never augmented: the trainer calls this on training batches only, and model selection stays honest (bug 9).
    """

    hflip: bool = False
    vflip: bool = False
    flip_probability: float = 0.5
    angles: tuple[float, ...] = ()
    rotation_probability: float = 0.5
    shrinks: tuple[float, ...] = ()
    shrink_probability: float = 0.25
    shears: tuple[float, ...] = ()
    shear_probability: float = 0.25
    elastic_alpha: float = 1300.0  # pixels, the seed's `alpah`
    elastic_sigmas: tuple[float, ...] = ()  # pixels, the seed's `sigmoid(s)`; one is picked per sample
    deformation_probability: float = 0.25
    distortion_sigma: float = 40.0  # pixels, [distortion] gaussian_filter_rsigma
    distortion_sizes: tuple[float, ...] = ()  # largest shift as a fraction of the image size
    distortion_probability: float = 0.25
    barrel: Lens | None = None
    barrdistortion_probability: float = 0.25
    pincushion: Lens | None = None
    pincdistortion_probability: float = 0.25
    sharpen_k: float | None = None
    sharpening_probability: float = 0.25
    brighten: tuple[float, float] | None = None  # (alpha, beta on the 0..255 scale)
    brightening_probability: float = 0.25

    @classmethod
    def from_config(cls, cfg: Config) -> Augmenter:
        """The operations switched on in [augmentor], with values from their own sections."""
        a = cfg.augmentor
        _check_positive(cfg)
        alpha, sigmas = _elastic_settings(cfg)
        return cls(
            hflip=a.hflip, vflip=a.vflip, flip_probability=a.flip_probability,
            angles=tuple(a.angles) if a.rotation else (), rotation_probability=a.rotation_probability,
            shrinks=tuple(a.shrinks), shrink_probability=a.shrink_probability,
            shears=tuple(a.shears), shear_probability=a.shear_probability,
            elastic_alpha=alpha, elastic_sigmas=sigmas if (a.deformation or a.transformer) else (),
            deformation_probability=a.deformation_probability,
            distortion_sigma=cfg.distortion.gaussian_filter_rsigma,
            distortion_sizes=tuple(cfg.distortion.distortions) if a.distortion else (),
            distortion_probability=a.distortion_probability,
            barrel=_lens(cfg.barrdistortion) if a.barrdistortion else None,
            barrdistortion_probability=a.barrdistortion_probability,
            pincushion=_lens(cfg.pincdistortion) if a.pincdistortion else None,
            pincdistortion_probability=a.pincdistortion_probability,
            sharpen_k=cfg.sharpening.k if a.sharpening else None, sharpening_probability=a.sharpening_probability,
            brighten=(cfg.brightening.alpha, cfg.brightening.beta) if a.brightening else None,
            brightening_probability=a.brightening_probability,
        )

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented copies of images (N, C, H, W) float in [0, 1] and labels (N, H, W), same shapes, dtypes, device.

        Every random number comes from `generator` (drawn on its device), so a seed repeats a batch exactly on
        CPU and GPU alike.
        """
        n, _, height, width = images.shape
        draw = _Draw(generator, n, images.device)
        matrices, moved = self._affine(draw)
        displacement, displaced = self._displacement(draw, height, width)
        moved = moved | displaced
        images, labels = images.clone(), labels.clone()
        if moved.any():
            idx = moved.nonzero()[:, 0]
            grid = geometry.identity_grid(height, width, images.device).expand(len(idx), height, width, 2)
            if displacement is not None:
                grid = grid + geometry.pixels_to_normalised(displacement[idx], height, width)
            affine = geometry.to_normalised(matrices[idx], height, width)
            grid = torch.einsum("nhwj,nij->nhwi", grid, affine)  # source = A (p + d(p))
            images[idx], labels[idx] = geometry.warp(images[idx], labels[idx], grid)
        if self.sharpen_k is not None:
            idx = draw.chance(self.sharpening_probability).nonzero()[:, 0]
            images[idx] = intensity.sharpen(images[idx], self.sharpen_k)
        if self.brighten is not None:
            idx = draw.chance(self.brightening_probability).nonzero()[:, 0]
            images[idx] = intensity.brighten(images[idx], *self.brighten)
        return images, labels

    def _affine(self, draw: _Draw) -> tuple[Tensor, Tensor]:
        """(N, 2, 2) pixel-unit output -> source maps, and which samples they move."""
        n, device = draw.n, draw.device
        matrices = torch.eye(2, device=device).expand(n, 2, 2)
        moved = torch.zeros(n, dtype=torch.bool, device=device)
        if self.hflip or self.vflip:
            fx = draw.chance(self.flip_probability) & self.hflip
            fy = draw.chance(self.flip_probability) & self.vflip
            matrices, moved = matrices @ geometry.flip_matrices(fx, fy), moved | fx | fy
        if self.angles:
            on = draw.chance(self.rotation_probability)
            matrices = matrices @ geometry.rotation_matrices(draw.pick(self.angles) * on)
            moved = moved | on
        if self.shrinks:
            on = draw.chance(self.shrink_probability)
            matrices = matrices @ geometry.scale_matrices(torch.where(on, draw.pick(self.shrinks), 1.0))
            moved = moved | on
        if self.shears:
            on = draw.chance(self.shear_probability)
            matrices = matrices @ geometry.shear_matrices(draw.pick(self.shears) * on)
            moved = moved | on
        return matrices, moved

    def _displacement(self, draw: _Draw, height: int, width: int) -> tuple[Tensor | None, Tensor]:
        """(N, H, W, 2) pixel displacements summed over the field operations (None if all are off), and who moved."""
        n, device = draw.n, draw.device
        moved = torch.zeros(n, dtype=torch.bool, device=device)
        if not (self.elastic_sigmas or self.distortion_sizes or self.barrel or self.pincushion):
            return None, moved
        total = torch.zeros(n, height, width, 2, device=device)
        if self.elastic_sigmas:
            on, which = draw.chance(self.deformation_probability), draw.index(len(self.elastic_sigmas))
            for i, sigma in enumerate(self.elastic_sigmas):
                idx = (on & (which == i)).nonzero()[:, 0]
                noise = draw.noise(len(idx), height, width, sigma)
                total[idx] += geometry.elastic_displacement(noise, sigma, self.elastic_alpha, height, width)
            moved |= on
        if self.distortion_sizes:
            on, size = draw.chance(self.distortion_probability), draw.pick(self.distortion_sizes)
            idx = on.nonzero()[:, 0]
            noise = draw.noise(len(idx), height, width, self.distortion_sigma)
            field = geometry.distortion_displacement(noise, self.distortion_sigma, 1.0, height, width)
            total[idx] += field * size[idx].view(-1, 1, 1, 1)
            moved |= on
        for lens, probability in ((self.barrel, self.barrdistortion_probability),
                                  (self.pincushion, self.pincdistortion_probability)):
            if lens is None:
                continue
            on, which = draw.chance(probability), draw.index(len(lens.centres))
            centres = torch.tensor(lens.centres, device=device, dtype=torch.float32)[which]  # (N, 2)
            idx = on.nonzero()[:, 0]
            total[idx] += geometry.radial_displacement(centres[idx], lens.radius, lens.amount, height, width)
            moved |= on
        return total, moved


class _Draw:
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


def _lens(section: RadialDistortionSection) -> Lens:
    return Lens(section.radius, section.amount, tuple((x, y) for x, y in section.centers))


def _elastic_settings(cfg: Config) -> tuple[float, tuple[float, ...]]:
    """(alpha, sigmas) of the elastic deformation, from the section that config/resolve.py chose."""
    a, d = cfg.augmentor, cfg.deformation
    if cfg.resolved.elastic == "augmentor":
        return a.alpha, (a.sigmoid,)
    if cfg.resolved.elastic == "deformation_sigmoid":
        return d.alpha, (d.sigmoid,)
    return d.alpha, tuple(d.sigmoids) or (d.sigmoid,)


def _check_positive(cfg: Config) -> None:
    """Values that would divide by zero deep inside a warp are reported here, naming their key."""
    problems = []
    checks = [
        (cfg.augmentor, "shrinks", cfg.augmentor.shrinks),
        (cfg.deformation, "sigmoids", cfg.deformation.sigmoids),
        (cfg.deformation, "sigmoid", [cfg.deformation.sigmoid]),
        (cfg.augmentor, "sigmoid", [cfg.augmentor.sigmoid]),
        (cfg.distortion, "gaussian_filter_rsigma", [cfg.distortion.gaussian_filter_rsigma]),
        (cfg.barrdistortion, "radius", [cfg.barrdistortion.radius]),
        (cfg.pincdistortion, "radius", [cfg.pincdistortion.radius]),
    ]
    for section, key, values in checks:
        bad = [v for v in values if v <= 0]
        if bad:
            problems.append(f"{section.where(key)} = {bad[0]}: must be > 0")
    if problems:
        raise ConfigError(problems)
