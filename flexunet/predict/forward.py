"""One forward pass, from uint8 images to class probabilities: input layout, TTA flips and the size round trip."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from flexunet.labels import LabelSpace

Forward = Callable[[Tensor], Tensor]  # a model (or ONNX session) as a function: float batch in [0, 1] -> logits


@torch.no_grad()
def forward_probs(model: Forward, batch: Tensor, space: LabelSpace, tta: bool = False) -> Tensor:
    """Class probabilities (N, C, H, W) for a float batch in [0, 1], by `space.probabilities`.

    With tta, the mean over the identity, horizontal and vertical flips (each flipped back first).
    """
    views: list[tuple[int, ...]] = [(), (3,), (2,)] if tta else [()]
    total: Tensor | None = None
    for dims in views:
        x = batch.flip(dims) if dims else batch
        logits = model(x).float()
        probs = space.probabilities(logits)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    assert total is not None  # views is never empty
    return total / len(views)


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in eval mode, laid out for fast inference on `device`: channels_last weights on the CPU, where
    oneDNN's channels_last convolutions are faster than the default layout (benchmarks/results/latest.json:
    `infer_img_s_b1` against `contiguous_inference`). Same numbers, other memory layout."""
    model.eval()
    if device.type != "cpu":
        return model
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; the stub omits it


def to_input(images_hwc: Sequence[np.ndarray], device: torch.device, channels_last: bool = False) -> Tensor:
    """Stack uint8 (H, W, C) images into a float batch (N, C, H, W) in [0, 1] on `device`."""
    batch = torch.from_numpy(np.stack(images_hwc)).to(device).permute(0, 3, 1, 2).float().div_(255)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def resize_probs(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) probabilities: upsample before thresholding, not the label map, for smooth edges."""
    if probs.shape[1:] == (height, width):
        return probs
    return np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in probs])
