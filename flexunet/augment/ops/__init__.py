"""The augmentation operations, one file each, registered in OPS below.

OPS is also the order of the random draws (so a seed repeats a batch exactly) and of composition: affine operations
compose in this order, field displacements add up, intensity operations run last. Adding an operation: one file
here with a frozen dataclass that has `kind`, `from_config(cfg)` (None when off) and the method of its kind (see
base.py), plus its line in OPS.
"""
from __future__ import annotations

from flexunet.augment.ops.base import AffineOp, AugmentOp, Draw, FieldOp, IntensityOp
from flexunet.augment.ops.brighten import Brighten
from flexunet.augment.ops.distortion import Distortion
from flexunet.augment.ops.elastic import Elastic
from flexunet.augment.ops.flip import Flip
from flexunet.augment.ops.lens import Barrel, Lens, Pincushion
from flexunet.augment.ops.rotation import Rotation
from flexunet.augment.ops.sharpen import Sharpen
from flexunet.augment.ops.shear import Shear
from flexunet.augment.ops.shrink import Shrink

OPS: tuple[type[AugmentOp], ...] = (
    Flip,
    Rotation,
    Shrink,
    Shear,
    Elastic,
    Distortion,
    Barrel,
    Pincushion,
    Sharpen,
    Brighten,
)

__all__ = ["OPS", "AffineOp", "AugmentOp", "Barrel", "Brighten", "Distortion", "Draw", "Elastic", "FieldOp", "Flip",
           "IntensityOp", "Lens", "Pincushion", "Rotation", "Sharpen", "Shear", "Shrink"]
