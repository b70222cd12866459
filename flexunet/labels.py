"""The label space of one config: how many labels, their names and colours, and the only rules from logits to
probabilities, probabilities to labels, and labels to mask pixels and overlay colours.

Validation, evaluation, previews, infer (whole image, tiled, TTA, ONNX) all go through one `LabelSpace`, so a
pixel gets the same label wherever it is predicted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import cv2
import numpy as np
import torch
from torch import Tensor

from flexunet.config.schema import Config
from flexunet.data.masks import colorize_labels, palette

RGB = tuple[int, int, int]

_NAMED_COLOURS: dict[str, RGB] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255), "gray": (128, 128, 128),
    "grey": (128, 128, 128), "orange": (255, 165, 0),
}

# Binary overlays: Okabe-Ito bluish green, visible on pale stains and dark backgrounds alike (and to colour-blind eyes).
BINARY_OVERLAY_COLOUR: RGB = (0, 158, 115)


@dataclass(frozen=True)
class LabelSpace:
    """What a model's C output channels mean. C = 1: binary, sigmoid, foreground where probability > threshold;
    C > 1: softmax over num_classes, the most probable label (the first of equals)."""

    num_classes: int
    names: tuple[str, ...]
    colours: tuple[RGB, ...]  # mask colour per label: [segmentation] black/white (binary) or rgb_map colours
    threshold: float = 0.5  # [infer] threshold: foreground probability of binary models, everywhere
    ignore_index: int | None = None  # [mask] ignore_index: a label that is no class
    colorize: bool = False  # [segmentation] colorize: binary masks in colours instead of grey 0/255

    @classmethod
    def from_config(cls, cfg: Config) -> LabelSpace:
        """The label space of `cfg`: [model] num_classes, [mask], [infer] threshold and [segmentation] colours."""
        num_classes = cfg.model.num_classes
        colours: tuple[RGB, ...]
        if num_classes == 1:
            seg = cfg.segmentation
            colours = (_NAMED_COLOURS.get(seg.black.lower(), (0, 0, 0)),
                       _NAMED_COLOURS.get(seg.white.lower(), (255, 255, 255)))
        else:
            colours = tuple((int(r), int(g), int(b)) for r, g, b in palette(cfg.rgb_map, num_classes))
        return cls(num_classes, tuple(cfg.label_names), colours, cfg.infer.threshold, cfg.mask.ignore_index,
                   cfg.segmentation.colorize)

    @property
    def binary(self) -> bool:
        """One output channel with a sigmoid."""
        return self.num_classes == 1

    @property
    def num_labels(self) -> int:
        """Labels a prediction can hold: background and foreground for binary models, else num_classes."""
        return max(self.num_classes, 2)

    def probabilities(self, logits: Tensor) -> Tensor:
        """Probabilities (N, C, H, W) from logits (N, C, H, W): sigmoid for binary models, softmax over C else."""
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)

    @overload
    def labels(self, probs: Tensor) -> Tensor: ...

    @overload
    def labels(self, probs: np.ndarray) -> np.ndarray: ...

    def labels(self, probs: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Labels (..., H, W) from probabilities (..., C, H, W): probability > threshold (binary), argmax else.
        A tensor gives int64 labels, a numpy array uint8 ones (as masks are written)."""
        p = torch.as_tensor(probs)
        out = (p.select(-3, 0) > self.threshold).long() if self.binary else p.argmax(-3)
        return out if isinstance(probs, Tensor) else out.numpy().astype(np.uint8)

    def mask_pixels(self, labels: np.ndarray) -> np.ndarray:
        """A mask file's pixels: grey 0/255 for binary models (coloured with colorize), RGB colours otherwise."""
        if self.binary and not self.colorize:
            return (labels * 255).astype(np.uint8)
        return colorize_labels(labels, np.array(self.colours, np.uint8))

    def overlay_colours(self) -> np.ndarray:
        """(num_labels, 3) overlay colour per label: the mask colours, except that a binary model's foreground is
        drawn in BINARY_OVERLAY_COLOUR unless [segmentation] white names a coloured (not grey) one: the default white
        blended over a pale image changed it by ~10 grey levels, which nobody can see."""
        colours = np.array(self.colours, np.uint8)
        if self.binary and int(colours[1].max()) - int(colours[1].min()) < 64:  # white, black, grey: no hue
            colours[1] = BINARY_OVERLAY_COLOUR
        return colours


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha-blend class colours (`LabelSpace.overlay_colours`) over the image where a label is not background
    (float math: no uint8 wrap-around), with a rim in the class colour so thin structures stay visible."""
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    blended = rgb.astype(np.float32)
    labels = np.where(labels < len(colours), labels, 0).astype(labels.dtype)  # [mask] ignore_index: shown unpainted
    fg = labels > 0
    blended[fg] = (1 - alpha) * blended[fg] + alpha * colours[labels[fg]].astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_GRADIENT, kernel) > 0
    nearest_class = cv2.dilate(labels, kernel)  # a rim pixel outside a region takes that region's class colour
    blended[edges] = colours[nearest_class[edges]]
    return blended.round().clip(0, 255).astype(np.uint8)
