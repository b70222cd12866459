"""Sliding-window inference for images larger than the model input: overlapping tiles, Gaussian-weighted blending.

Tiles are fed at the model's native scale (the whole image is never resized), so fine structure survives on
8000×8000 slides. Each tile's probabilities are weighted by a separable Gaussian that is high in the tile centre
and near zero at its edges, where zero padding inside the network makes predictions unreliable; overlapping tiles
therefore blend without seams (seed bug 36: overlaps were overwritten, not blended). The accumulated map lives on
the CPU and only one batch of tiles is on the device at a time, so memory grows with the tile batch, not the image.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SIGMA_SCALE = 0.125  # sigma = tile / 8, as MONAI's sliding_window_inference(mode="gaussian")
MIN_WEIGHT = 1e-3  # 1-D floor: a pixel covered only by tile edges (image corners) still gets a finite weight


@dataclass(frozen=True)
class Box:
    """One square tile: rows top..top+size, columns left..left+size."""

    top: int
    left: int
    size: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.size), slice(self.left, self.left + self.size)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread start offsets of tiles along one axis: the first at 0, the last ending at `length`.

    Spreading (rather than stepping by tile - overlap and clamping the last tile) keeps every overlap at least
    `overlap` px and all overlaps about equal, so no strip of the image depends on a thin sliver of one tile.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tile = {tile}, overlap = {overlap}: need 0 <= overlap < tile")
    if length < tile:
        raise ValueError(f"length {length} < tile {tile}: pad the image to at least one tile first")
    count = 1 + -(-(length - tile) // (tile - overlap))  # ceil division
    return np.linspace(0, length - tile, count).round().astype(int).tolist() if count > 1 else [0]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Row-major tiles of side `tile` that cover a (height, width) image (both >= tile) with >= `overlap` px overlap."""
    tops, lefts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    return [Box(top, left, tile) for top in tops for left in lefts]


def gaussian_weights_1d(tile: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """(tile,) Gaussian centred on the tile (1 at the centre), floored at MIN_WEIGHT.

    The 2-D weight is its outer product.
    """
    x = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    return np.maximum(np.exp(-0.5 * (x / (sigma_scale * tile)) ** 2), MIN_WEIGHT).astype(np.float32)


def gaussian_weights(tile: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """(tile, tile) blending weight of one tile."""
    g = gaussian_weights_1d(tile, sigma_scale)
    return np.outer(g, g)


def weight_sums(height: int, width: int, boxes: Sequence[Box], weight_1d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (height,) and per-column (width,) sums of tile weights.

    The tiles form a full grid and each weight is an outer product, so the summed weight is separable:
    total(y, x) = rows[y] * cols[x]. Two vectors replace an (H, W) float map (256 MB at 8000×8000).
    """
    rows, cols = np.zeros(height, np.float32), np.zeros(width, np.float32)
    size = len(weight_1d)
    for top in sorted({b.top for b in boxes}):
        rows[top : top + size] += weight_1d
    for left in sorted({b.left for b in boxes}):
        cols[left : left + size] += weight_1d
    return rows, cols


def blend(tiles: Sequence[np.ndarray], boxes: Sequence[Box], height: int, width: int,
          sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Gaussian-weighted mean (C, H, W) of per-tile maps (C, tile, tile) placed at `boxes` (a full tile grid)."""
    acc = BlendAccumulator(tiles[0].shape[0], height, width, boxes, sigma_scale)
    for tile, box in zip(tiles, boxes, strict=True):
        acc.add(tile, box)
    return acc.result()


class BlendAccumulator:
    """Sums weighted tiles into a float32 (C, H, W) CPU map, then divides by the separable weight sum once."""

    def __init__(self, channels: int, height: int, width: int, boxes: Sequence[Box],
                 sigma_scale: float = SIGMA_SCALE) -> None:
        tile = boxes[0].size
        self.weight_1d = gaussian_weights_1d(tile, sigma_scale)
        self.weight = np.outer(self.weight_1d, self.weight_1d)
        self.rows, self.cols = weight_sums(height, width, boxes, self.weight_1d)
        self.total = np.zeros((channels, height, width), np.float32)

    def add(self, tile: np.ndarray, box: Box) -> None:
        ys, xs = box.slices
        self.total[:, ys, xs] += tile * self.weight

    def result(self) -> np.ndarray:
        for y in range(0, self.total.shape[1], 1024):  # in bands: no (H, W) temporary
            band = self.total[:, y : y + 1024]
            band /= self.rows[y : y + 1024, None] * self.cols[None, :]
        return self.total


def pad_to_tile(image: np.ndarray, tile: int, value: int) -> np.ndarray:
    """Pad (H, W, C) bottom/right with grey `value` up to at least one tile: small images are padded, never cropped."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, tile - height), max(0, tile - width)
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=value)


TileHook = Callable[[Box, np.ndarray, np.ndarray], None]  # (box, tile image (t, t, C) uint8, tile probs (C, t, t))
CropsToProbs = Callable[[Sequence[np.ndarray]], np.ndarray]  # uint8 (t, t, C) crops -> probabilities (n, C, t, t)


def sliding_window_probs(forward: CropsToProbs, image: np.ndarray, tile: int, overlap: int, batch_size: int = 4,
                         background: int = 0, on_tile: TileHook | None = None) -> np.ndarray:
    """Probabilities (C, H, W) of a uint8 (H, W, C) image of any size, from overlapping `tile`-px windows.

    `forward` is the Predictor's crops -> probabilities function, so tiling knows nothing of models or devices. Only
    `batch_size` tiles go through it at a time; the blended map stays on the CPU.
    """
    height, width = image.shape[:2]
    padded = pad_to_tile(image, tile, background)
    boxes = tile_boxes(padded.shape[0], padded.shape[1], tile, overlap)
    acc: BlendAccumulator | None = None
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = [padded[b.slices] for b in chunk]
        probs = forward(crops)  # (n, C, tile, tile)
        if acc is None:
            acc = BlendAccumulator(probs.shape[1], padded.shape[0], padded.shape[1], boxes)
        for box, crop, p in zip(chunk, crops, probs, strict=True):
            acc.add(p, box)
            if on_tile is not None:
                on_tile(box, crop, p)
    assert acc is not None  # tile_boxes gives at least one box
    return acc.result()[:, :height, :width]


def and_labels(tiled: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Seed bitwise_blending: keep a tiled label only where the whole-image prediction is foreground too.

    For binary masks this is the seed's pixelwise AND; it removes tile-level false positives far from the object
    that the low-resolution whole-image view does not see, at the cost of the whole image's coarse edges.
    """
    return np.where(whole > 0, tiled, 0).astype(tiled.dtype)
