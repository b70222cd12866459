"""Losses by seed name. Every loss takes logits (N, C, H, W) and a label map (N, H, W) and returns a scalar.

C == 1 means a binary model (sigmoid); C > 1 a softmax model. The seed's losses are computed on the
probabilities exactly as the seed's Keras code does (batch-global, smooth 1); cross-entropies use the logits,
which is the same value without the clipping error.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flexunet.config.catalog import canonical_loss_name
from flexunet.config.schema import ModelSection
from flexunet.errors import ConfigError
from flexunet.metrics.seed import dice_coef, iou_coef

LossFn = Callable[[Tensor, Tensor], Tensor]


def probs_and_targets(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities and matching float targets, both (N, C, H, W): sigmoid/0-1 for C == 1, softmax/one-hot else."""
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return probs_with_targets(probs, labels)


def valid_pixels(labels: Tensor, channels: int) -> Tensor:
    """(N, H, W) bool: pixels whose label is a class. Any other label is the [mask] ignore_index (masks with stray
    labels are refused when read), so those pixels count in no loss and no metric."""
    return labels < max(channels, 2)


def probs_with_targets(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """`probs` and float targets (N, C, H, W), both zero at ignored pixels, so sums over pixels leave them out."""
    valid = valid_pixels(labels, probs.shape[1])
    clean = labels.long().where(valid, 0)
    if probs.shape[1] == 1:
        target = clean.unsqueeze(1).to(probs.dtype)
    else:
        target = F.one_hot(clean, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    keep = valid.unsqueeze(1).to(probs.dtype)
    return probs * keep, target * keep


def _valid_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of per-pixel `values` over the valid pixels (all of them when nothing is ignored)."""
    return (values * valid).sum() / valid.sum().clamp_min(1)


def crossentropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy for one channel, categorical cross-entropy otherwise (mean over non-ignored pixels)."""
    valid = valid_pixels(labels, logits.shape[1])
    if logits.shape[1] == 1:
        target = labels.to(logits.dtype).where(valid, 0)
        return _valid_mean(F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none"), valid)
    return F.cross_entropy(logits, labels.long().where(valid, -100), ignore_index=-100)


def _bce_on_probs(probs: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    pixel_bce = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target, reduction="none").mean(1)  # (N, H, W)
    return _valid_mean(pixel_bce, valid)


def _bce(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.shape[1] == 1:
        return crossentropy(logits, labels)
    probs, target = probs_and_targets(logits, labels)
    return _bce_on_probs(probs, target, valid_pixels(labels, logits.shape[1]))  # the seed's BCE, every one-hot channel


def dice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    probs, target = probs_and_targets(logits, labels)
    return 1 - dice_coef(target, probs)


def iou_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return 1 - iou_coef(*reversed(probs_and_targets(logits, labels)))


def bce_dice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return (_bce(logits, labels) + dice_loss(logits, labels)) / 2


def bce_iou_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return (_bce(logits, labels) + iou_loss(logits, labels)) / 2


def ssim_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """1 - SSIM(target, probs), Gaussian window 11, sigma 1.5, data range 1 (tf.image.ssim's settings)."""
    from monai.losses import SSIMLoss

    probs, target = probs_and_targets(logits, labels)
    n, c, h, w = probs.shape
    win = min(11, h, w)
    win -= 1 - win % 2  # odd, and no larger than the image (an 8-pixel side once got a 9-pixel window)
    return SSIMLoss(spatial_dims=2, data_range=1.0, win_size=win)(
        probs.reshape(n * c, 1, h, w), target.reshape(n * c, 1, h, w)
    )


def basnet_hybrid_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return (_bce(logits, labels) + ssim_loss(logits, labels) + iou_loss(logits, labels)) / 3


def dice_ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """MONAI Dice (per-sample soft Dice, nnU-Net's default recipe; background included for softmax) plus
    cross-entropy: DiceCELoss's two terms, on probabilities masked at ignored pixels."""
    from monai.losses import DiceLoss

    probs, target = probs_and_targets(logits, labels)
    return DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5)(probs, target) + crossentropy(logits, labels)


LOSSES: dict[str, LossFn] = {  # names as in config/catalog.py LOSS_NAMES (seed spellings: canonical_loss_name)
    "bce_iou_loss": bce_iou_loss,
    "bce_dice_loss": bce_dice_loss,
    "dice_loss": dice_loss,
    "iou_loss": iou_loss,
    "categorical_crossentropy": crossentropy,
    "binary_crossentropy": crossentropy,
    "ssim_loss": ssim_loss,
    "basnet_hybrid_loss": basnet_hybrid_loss,
    "dice_ce_loss": dice_ce_loss,
}

def default_loss_name(section: ModelSection) -> str:
    """The seed's F default (categorical_crossentropy) for softmax models, the Pap-Smear choice for binary ones."""
    return "categorical_crossentropy" if section.num_classes > 1 else "bce_iou_loss"


def loss_name(section: ModelSection) -> str:
    """The canonical name of [model] loss, or of its default when unset (what evaluation.csv's first line names)."""
    return canonical_loss_name(section.loss or default_loss_name(section))


def build_loss(section: ModelSection) -> LossFn:
    name = loss_name(section)
    if name not in LOSSES:
        close = difflib.get_close_matches(name, list(LOSSES), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{section.where('loss')} = {section.loss!r}: unknown loss; "
                          f"{hint}choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
