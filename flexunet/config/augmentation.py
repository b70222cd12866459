"""The sections of the seed's augmentation: [generator], [augmentor] and the sections of each distortion it applies
([deformation], [distortion], [sharpening], [brightening], [barrdistortion], [pincdistortion])."""
from __future__ import annotations

from pydantic import Field

from flexunet.config.section import Section


class GeneratorSection(Section):
    """[generator]: the online augmentation switch (the seed's dataset-generator keys are notes)."""

    augmentation: bool = True


def _default_angles() -> list[float]:
    return [90, 180, 270]  # ints, as the seed configs write them (the resolved config prints them that way)


class AugmentorSection(Section):
    """[augmentor]: which random operations training applies."""

    vflip: bool = True
    hflip: bool = True
    rotation: bool = True
    angles: list[float] = Field(default_factory=_default_angles)
    shrinks: list[float] = Field(default_factory=lambda: [0.8])
    shears: list[float] = Field(default_factory=list)
    transformer: bool = False  # S name of `deformation`
    alpha: float = 1300.0
    sigmoid: float = 8.0
    deformation: bool = False
    distortion: bool = False
    sharpening: bool = False
    brightening: bool = False
    barrdistortion: bool = False
    pincdistortion: bool = False
    # Chance that each switched-on operation is applied to one sample (drawn anew per sample and batch).
    flip_probability: float = Field(0.5, ge=0, le=1)  # hflip and vflip, each on its own
    rotation_probability: float = Field(0.5, ge=0, le=1)  # then one angle from `angles`
    shrink_probability: float = Field(0.25, ge=0, le=1)  # then one ratio from `shrinks`
    shear_probability: float = Field(0.25, ge=0, le=1)  # then one value from `shears`
    deformation_probability: float = Field(0.25, ge=0, le=1)
    distortion_probability: float = Field(0.25, ge=0, le=1)
    barrdistortion_probability: float = Field(0.25, ge=0, le=1)
    pincdistortion_probability: float = Field(0.25, ge=0, le=1)
    sharpening_probability: float = Field(0.25, ge=0, le=1)
    brightening_probability: float = Field(0.25, ge=0, le=1)


class DeformationSection(Section):
    """[deformation]: elastic deformation strength (alpha) and smoothness (sigmoid = Gaussian sigma)."""

    alpha: float = 1300.0
    sigmoid: float = 8.0
    sigmoids: list[float] = Field(default_factory=lambda: [8.0])


class DistortionSection(Section):
    """[distortion]: random smooth distortion."""

    gaussian_filter_rsigma: float = 40.0
    distortions: list[float] = Field(default_factory=lambda: [0.02])


class SharpeningSection(Section):
    """[sharpening]: strength k of the 3x3 sharpening kernel (image only)."""

    k: float = 1.0


class BrighteningSection(Section):
    """[brightening]: image = alpha * image + beta (image only)."""

    alpha: float = 1.2
    beta: float = 10.0


class RadialDistortionSection(Section):
    """Barrel (amount > 0) or pincushion (amount < 0) distortion around each centre."""

    radius: float = 0.5
    amount: float = 0.5
    centers: list[tuple[float, float]] = Field(default_factory=lambda: [(0.5, 0.5)])


class BarrdistortionSection(RadialDistortionSection):
    """[barrdistortion]"""


class PincdistortionSection(RadialDistortionSection):
    """[pincdistortion]"""

    amount: float = -0.5
