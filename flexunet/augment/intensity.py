"""Operations that change pixel values only. They are never applied to masks (the seed did, bug 13)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sharpen(images: Tensor, k: float) -> Tensor:
    """The seed's 3x3 kernel (-k around, 1 + 8k in the centre) on each channel of (N, C, H, W) images in [0, 1]."""
    c = images.shape[1]
    kernel = images.new_full((3, 3), -k)
    kernel[1, 1] = 1 + 8 * k
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")  # replicate: a dark frame would appear with zeros
    return F.conv2d(padded, kernel.expand(c, 1, 3, 3), groups=c).clamp_(0, 1)


def brighten(images: Tensor, alpha: float, beta: float) -> Tensor:
    """alpha * image + beta, with beta on the 0..255 scale as in the seed's cv2.convertScaleAbs."""
    return (images * alpha + beta / 255).clamp_(0, 1)
