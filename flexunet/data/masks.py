"""Turn mask pixels into label maps (H, W) of class indices, and label maps back into colours."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from flexunet.errors import DataError

RGB = tuple[int, int, int]


def as_rgb(values: np.ndarray) -> RGB:
    """A colour (3,) array as a hashable (r, g, b) of Python ints."""
    r, g, b = (int(v) for v in values)
    return (r, g, b)

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
    ignore_index: int | None = None  # a label that marks pixels left out of loss and metrics
    instances: bool = False  # instance-label masks: every id > 0 is foreground

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 1


def is_grey(mask: np.ndarray) -> bool:
    """A single-channel mask, or three equal channels (a grey mask saved as RGB)."""
    return mask.ndim == 2 or bool(np.all(mask[..., 0] == mask[..., 1]) and np.all(mask[..., 1] == mask[..., 2]))


def holds_instance_ids(mask: np.ndarray) -> bool:
    """A single-channel mask of more than 8 bits with values over 255: object ids (instance labels), not grey
    levels; read as grey and thresholded, its ids below 257 would fall to the background."""
    return mask.ndim == 2 and mask.dtype != np.uint8 and int(mask.max(initial=0)) > 255


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
    A single-channel mask is read as grey colours (g, g, g). Ties are broken by `_break_ties`.
    """
    if mask_rgb.ndim == 2:
        mask_rgb = np.repeat(mask_rgb[:, :, None], 3, axis=2)
    colours = np.array(list(rgb_map.keys()), dtype=np.int64)  # (K, 3)
    indices = np.array(list(rgb_map.values()), dtype=np.uint8)  # (K,)
    packed = (mask_rgb[..., 0].astype(np.int32) << 16) | (mask_rgb[..., 1].astype(np.int32) << 8) | mask_rgb[..., 2]
    unique, inverse = np.unique(packed.ravel(), return_inverse=True)
    unique_rgb = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1).astype(np.int64)  # (U, 3)
    dist2 = ((unique_rgb[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)  # (U, K)
    nearest = _break_ties(unique_rgb, colours, dist2, _background_colour(rgb_map))
    far = dist2[np.arange(len(unique)), nearest] > tolerance**2
    labels = indices[nearest][inverse].reshape(packed.shape)
    return labels, float(far[inverse].mean())


def _background_colour(rgb_map: Mapping[RGB, int]) -> np.ndarray:
    """The colour of label 0 (black when the map has none): what anti-aliased edges blend with."""
    return np.array(next((c for c, i in rgb_map.items() if i == 0), (0, 0, 0)), dtype=np.float64)


def _break_ties(pixels: np.ndarray, colours: np.ndarray, dist2: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Index (U,) of the nearest colour of each pixel; between equally near colours, the one whose blend with the
    background passes closest to the pixel. An anti-aliased edge pixel is such a blend: (0, 64, 128) is half of
    (0, 128, 255) on black, though it is exactly as near to (0, 0, 255); dict order used to pick (0, 0, 255).
    """
    direction = colours - background  # (K, 3)
    length2 = np.maximum((direction**2).sum(axis=1), 1)  # (K,)
    offset = pixels[:, None, :] - background  # (U, 1, 3)
    t = np.clip((offset * direction[None]).sum(axis=2) / length2, 0, 1)  # (U, K) position along each blend line
    blend_dist2 = ((offset - t[..., None] * direction[None]) ** 2).sum(axis=2)  # (U, K)
    tied = dist2 == dist2.min(axis=1, keepdims=True)
    return np.where(tied, blend_dist2, np.inf).argmin(axis=1)


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
        colour = as_rgb(unique[far][i])
        nearest = as_rgb(colours[dist2[far][i].argmin()])
        out.append((colour, nearest, float(counts[far][i] / len(flat))))
    return out


def decode_mask(mask: np.ndarray, decoding: MaskDecoding, source: str = "mask") -> tuple[np.ndarray, float]:
    """Label map (H, W) uint8 and unmapped fraction (always 0 for binary and index masks).

    `source` (the file) names the mask in errors. Pixels equal to `decoding.ignore_index` keep that label.
    """
    lossy = source.lower().endswith((".jpg", ".jpeg"))  # JPEG noise shifts values: never read them as labels
    if decoding.instances:  # ids are read as they are stored (16-bit too): thresholding 16-bit ids at a level lost
        # every id below 257 to the background
        return (to_grey(mask) > 0).astype(np.uint8), 0.0
    if decoding.is_binary:
        return decode_binary_mask(to_grey(mask), decoding, lossy), 0.0
    if mask.ndim == 2 and not lossy and is_index_map(mask, decoding):
        return mask.astype(np.uint8), 0.0
    if mask.ndim == 2 and not _is_grey_map(decoding.rgb_map or {}):
        if lossy:
            raise DataError(f"{source}: a grey JPEG mask cannot hold class indices (JPEG changes values); save it as "
                            f"PNG, or give [mask] rgb_map grey colours such as {{(0,0,0):0, (255,255,255):1}}")
        raise DataError(_label_error(mask, decoding, source))
    return decode_rgb_mask(colour_levels(mask), decoding.rgb_map or {}, decoding.color_tolerance)


def decode_binary_mask(grey: np.ndarray, decoding: MaskDecoding, lossy: bool = False) -> np.ndarray:
    """Labels 0/1 of a binary mask: a mask whose largest value is 1 holds the labels themselves; any other is
    thresholded (16-bit masks over 255 on their 8-bit level). The ignore_index value is kept, not thresholded.

    A `lossy` (JPEG) mask is always thresholded: the noise of an empty one can reach 1.
    """
    ignored = grey == decoding.ignore_index if decoding.ignore_index is not None else np.zeros(grey.shape, bool)
    kept = np.where(ignored, 0, grey)
    if kept.max(initial=0) <= 1 and not lossy:
        labels = kept.astype(np.uint8)  # a 0/1 mask: thresholding it at 127 would make it all background
    else:
        labels = binarize_mask(colour_levels(kept), decoding.threshold, decoding.blur_size, decoding.algorithm)
    labels[ignored] = decoding.ignore_index or 0
    return labels


def is_index_map(mask: np.ndarray, decoding: MaskDecoding) -> bool:
    """Whether every value of a single-channel mask is a class index (or the ignore_index)."""
    values = np.unique(mask)
    return bool(np.all((values < decoding.num_classes) | (values == decoding.ignore_index)))


def _is_grey_map(rgb_map: Mapping[RGB, int]) -> bool:
    """An rgb_map of grey colours only, e.g. {(0,0,0):0, (255,255,255):1}: grey masks are then colours, not labels."""
    return bool(rgb_map) and all(r == g == b for r, g, b in rgb_map)


def colour_levels(mask: np.ndarray) -> np.ndarray:
    """8-bit colour levels of a mask: 16-bit masks with values over 255 are divided by 257 (65535 -> 255)."""
    if mask.dtype == np.uint8:
        return mask
    return (mask // 257 if mask.max(initial=0) > 255 else mask).astype(np.uint8)


def _label_error(mask: np.ndarray, decoding: MaskDecoding, source: str) -> str:
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= decoding.num_classes and v != decoding.ignore_index]
    shown = ", ".join(map(str, bad[:6])) + (", ..." if len(bad) > 6 else "")
    ignore = f"set [mask] ignore_index = {bad[0]} if they mark pixels to leave out, or " if bad[0] <= 255 else ""
    return (f"{source}: label values {shown} are not classes of [model] num_classes = {decoding.num_classes}; "
            f"{ignore}give [mask] rgb_map grey colours if the grey levels are colours")


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
    """RGB image (H, W, 3) uint8 with each label painted in its class colour; labels past the palette (the
    [mask] ignore_index) in white."""
    return np.concatenate([colours, [[255, 255, 255]]]).astype(np.uint8)[np.minimum(labels, len(colours))]
