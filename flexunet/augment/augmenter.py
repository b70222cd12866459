"""Random augmentation of training batches: one sampling grid per sample, shared by image and mask.

The seed enumerated fixed variants (every angle, every shrink) and warped masks bilinearly with their own random
fields (bugs 11-14). Here each sample draws its own operations from a torch.Generator, the image and its labels are
resampled once on the same grid (bilinear for images, nearest for labels), and brightness/sharpness touch images only.
The operations themselves are in ops/, one file each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from flexunet.augment import geometry
from flexunet.augment.ops import OPS, AffineOp, AugmentOp, Draw, FieldOp, IntensityOp
from flexunet.config.schema import Config

Op = TypeVar("Op")


@dataclass(frozen=True)
class Augmenter:
    """The operations switched on, in OPS order; call it on a training batch.

    `Augmenter()` changes nothing. Validation batches are never augmented: the trainer calls this on training
    batches only, and model selection stays honest (bug 9).
    """

    ops: tuple[AugmentOp, ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> Augmenter:
        """The operations switched on in [augmentor], with values from their own sections."""
        return cls(tuple(op for kind in OPS if (op := kind.from_config(cfg)) is not None))

    def op(self, kind: type[Op]) -> Op | None:
        """The operation of that class, if it is on."""
        return next((op for op in self.ops if isinstance(op, kind)), None)

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented copies of images (N, C, H, W) float in [0, 1] and labels (N, H, W), same shapes, dtypes, device.

        Every random number comes from `generator` (drawn on its device), so a seed repeats a batch exactly on
        CPU and GPU alike.
        """
        n, _, height, width = images.shape
        draw = Draw(generator, n, images.device)
        matrices = torch.eye(2, device=images.device).expand(n, 2, 2)
        moved = torch.zeros(n, dtype=torch.bool, device=images.device)
        for affine_op in self._of_kind(AffineOp):
            m, on = affine_op.matrices(draw)
            matrices, moved = matrices @ m, moved | on
        displacement = None
        fields = self._of_kind(FieldOp)
        if fields:
            displacement = torch.zeros(n, height, width, 2, device=images.device)
            for field_op in fields:
                moved = moved | field_op.add_displacement(draw, displacement)
        images, labels = images.clone(), labels.clone()
        if moved.any():
            idx = moved.nonzero()[:, 0]
            grid = geometry.identity_grid(height, width, images.device).expand(len(idx), height, width, 2)
            if displacement is not None:
                grid = grid + geometry.pixels_to_normalised(displacement[idx], height, width)
            affine = geometry.to_normalised(matrices[idx], height, width)
            grid = torch.einsum("nhwj,nij->nhwi", grid, affine)  # source = A (p + d(p))
            images[idx], labels[idx] = geometry.warp(images[idx], labels[idx], grid)
        for intensity_op in self._of_kind(IntensityOp):
            intensity_op.apply(draw, images)
        return images, labels

    def _of_kind(self, kind: type[Op]) -> list[Op]:
        return [op for op in self.ops if isinstance(op, kind)]
