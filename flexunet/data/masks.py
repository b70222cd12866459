"""Turn mask pixels into label maps (H, W) of class indices, and label maps back into colours."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

RGB = tuple[int, int, int]

_THRESHOLD_ALGORITHMS = {
    "cv2.THRESH_OTSU": cv2.THRESH_BINARY | cv2.THRESH_OTSU,
    "cv2.THRESH_TRIANGLE": cv2.THRESH_BINARY | cv2.THRESH_TRIANGLE,
    "cv2.THRESH_BINARY": cv2.THRESH_BINARY,
    "cv2.THRESH_TRUNC": cv2.THRESH_BINARY,  # TRUNC keeps grey levels; as a mask it means "above threshold"
}


@dataclass(frozen=True)
class MaskDecoding:
    """How mask pixels become labels: a grey threshold (binary) or nearest colour in rgb_map (multi-class)."""

    num_classes: int
    threshold: int = 127
    blur_size: tuple[int, int] | None = None
    algorithm: str | None = None
    rgb_map: Mapping[RGB, int] | None = None
    color_tolerance: float = 40.0

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 1


def to_grey(mask: np.ndarray) -> np.ndarray:
    """Single-channel view of a mask: colour masks take the brightest channel, so any coloured label counts."""
    return mask if mask.ndim == 2 else mask.max(axis=2)


def binarize_mask(grey: np.ndarray, threshold: int, blur_size: tuple[int, int] | None = None,
                  algorithm: str | None = None) -> np.ndarray:
    """Foreground = grey > threshold, as uint8 0/1. JPEG masks are lossy, so they are never read as-is.

    The blur smooths edges before the threshold (the seed blurred after it, which dilated masks by a pixel).
    """
    if blur_size:
        grey = cv2.blur(grey, tuple(blur_size))
    if algorithm:
        _, out = cv2.threshold(grey, threshold, 1, _THRESHOLD_ALGORITHMS[algorithm])
        return out.astype(np.uint8)
    return (grey > threshold).astype(np.uint8)


def decode_rgb_mask(mask_rgb: np.ndarray, rgb_map: Mapping[RGB, int], tolerance: float) -> tuple[np.ndarray, float]:
    """Labels (H, W) uint8 from the nearest rgb_map colour, and the fraction of pixels farther than `tolerance`.

    Anti-aliased edge colours snap to the nearest class; a large unmapped fraction means a wrong rgb_map.
    A single-channel mask is read as grey colours (g, g, g).
    """
    if mask_rgb.ndim == 2:
        mask_rgb = np.repeat(mask_rgb[:, :, None], 3, axis=2)
    colours = np.array(list(rgb_map.keys()), dtype=np.int32)  # (K, 3)
    indices = np.array(list(rgb_map.values()), dtype=np.uint8)  # (K,)
    packed = (mask_rgb[..., 0].astype(np.int32) << 16) | (mask_rgb[..., 1].astype(np.int32) << 8) | mask_rgb[..., 2]
    unique, inverse = np.unique(packed.ravel(), return_inverse=True)
    unique_rgb = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)  # (U, 3)
    dist2 = ((unique_rgb[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)  # (U, K)
    nearest = dist2.argmin(axis=1)
    far = dist2[np.arange(len(unique)), nearest] > tolerance**2
    labels = indices[nearest][inverse].reshape(packed.shape)
    return labels, float(far[inverse].mean())


def unmapped_colours(mask_rgb: np.ndarray, rgb_map: Mapping[RGB, int], tolerance: float,
                     limit: int = 3) -> list[tuple[RGB, RGB, float]]:
    """The most frequent colours farther than `tolerance` from every mapped colour: (colour, nearest, fraction)."""
    if mask_rgb.ndim == 2:
        mask_rgb = np.repeat(mask_rgb[:, :, None], 3, axis=2)
    flat = mask_rgb.reshape(-1, 3).astype(np.int32)
    unique, counts = np.unique(flat, axis=0, return_counts=True)
    colours = np.array(list(rgb_map.keys()), dtype=np.int32)
    dist2 = ((unique[:, None, :] - colours[None]) ** 2).sum(axis=2)
    far = dist2.min(axis=1) > tolerance**2
    order = np.argsort(-counts[far])[:limit]
    out = []
    for i in order:
        colour = tuple(int(v) for v in unique[far][i])
        nearest = tuple(int(v) for v in colours[dist2[far][i].argmin()])
        out.append((colour, nearest, float(counts[far][i] / len(flat))))
    return out


def decode_mask(mask: np.ndarray, decoding: MaskDecoding) -> tuple[np.ndarray, float]:
    """Label map (H, W) uint8 and unmapped fraction (always 0 for binary masks)."""
    if decoding.is_binary:
        return binarize_mask(to_grey(mask), decoding.threshold, decoding.blur_size, decoding.algorithm), 0.0
    if mask.ndim == 2 and mask.max(initial=0) < decoding.num_classes:
        return mask.astype(np.uint8), 0.0  # already an index map
    return decode_rgb_mask(mask, decoding.rgb_map or {}, decoding.color_tolerance)


def palette(rgb_map: Mapping[RGB, int], num_labels: int) -> np.ndarray:
    """(num_labels, 3) uint8 colour of each class: the first rgb_map colour with that index (grey ramp if none)."""
    out = np.zeros((num_labels, 3), dtype=np.uint8)
    seen = set()
    for colour, index in rgb_map.items():
        if index < num_labels and index not in seen:
            out[index] = colour
            seen.add(index)
    for index in range(num_labels):
        if index not in seen:
            out[index] = (255 * index // max(num_labels - 1, 1),) * 3
    return out


def colorize_labels(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGB image (H, W, 3) uint8 with each label painted in its class colour."""
    return colours[labels]
