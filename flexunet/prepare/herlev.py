"""Herlev / DTU smear2005 importer: `<category>/X.BMP` cell images with `X-d.bmp` segmentation images.

The seed pasted each cell on a square canvas, cropped its centre, and wrote 13 rotated/flipped copies of every
cell *before* splitting, so copies of one cell landed in train and test. Here there are no copies: augmentation
happens at training time, and cells are split by slide image (the first number of the name), because crops of one
slide can show the same cell under two names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flexunet.data.io import read_image, read_mask
from flexunet.data.masks import RGB
from flexunet.data.pairing import list_images
from flexunet.errors import DataError
from flexunet.prepare.importers import ImportResult, finish_import, write_pair

# Mask colour of each category. The seed read them from [maskcolor] and made severe_dysplastic white; the
# others are flexunet's choice of distinct colours.
HERLEV_COLOURS: dict[str, RGB] = {
    "severe_dysplastic": (255, 255, 255), "carcinoma_in_situ": (255, 0, 0), "light_dysplastic": (0, 255, 0),
    "moderate_dysplastic": (0, 0, 255), "normal_columnar": (255, 255, 0), "normal_intermediate": (0, 255, 255),
    "normal_superficiel": (255, 0, 255),
}
# Same cells from crops of one slide image share the first number: `153829063-153829073-001`.
HERLEV_GROUP_BY = r"^(\d+)-"


@dataclass(frozen=True)
class Canvas:
    """How a cell is framed: pasted centred on a `size` square, then a centred `crop`, then resized to `resize`."""

    size: int = 312
    crop: int | None = 128
    resize: int | None = None
    seamless: bool = False  # blend the paste into the canvas (cv2.seamlessClone) instead of a hard edge


def nucleus_region(segmentation_rgb: np.ndarray, min_blue: int = 250, max_other: int = 100) -> np.ndarray:
    """(H, W) bool: the pure-blue pixels of a Herlev `-d.bmp` (blue high, red and green low) mark the nucleus.

    The seed tested only blue == 255, which would also take white or cyan pixels.
    """
    r, g, b = (segmentation_rgb[..., i].astype(np.int16) for i in range(3))
    return (b >= min_blue) & (r <= max_other) & (g <= max_other)


def frame(image: np.ndarray, canvas: Canvas, fill: np.ndarray, seamless: bool = False) -> np.ndarray:
    """Paste `image` centred on a square canvas of colour `fill` (grown to fit), crop the centre, resize."""
    h, w = image.shape[:2]
    side = max(canvas.size, h, w)
    out = np.empty((side, side) + image.shape[2:], dtype=image.dtype)
    out[...] = fill
    top, left = (side - h) // 2, (side - w) // 2
    if seamless and image.ndim == 3 and side > max(h, w) + 2:
        region = np.zeros((h, w), np.uint8)
        region[1:-1, 1:-1] = 255  # seamlessClone needs the region inside the source's border
        out = cv2.seamlessClone(image, out, region, (left + w // 2, top + h // 2), cv2.NORMAL_CLONE)
    else:
        out[top:top + h, left:left + w] = image
    if canvas.crop and canvas.crop < side:
        start = (side - canvas.crop) // 2
        out = out[start:start + canvas.crop, start:start + canvas.crop]
    if canvas.resize and canvas.resize != out.shape[0]:
        shrink = canvas.resize < out.shape[0]
        out = cv2.resize(out, (canvas.resize, canvas.resize),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def _frame_mask(mask: np.ndarray, canvas: Canvas) -> np.ndarray:
    framed = frame(mask, Canvas(canvas.size, canvas.crop), np.zeros(3, np.uint8))
    if canvas.resize and canvas.resize != framed.shape[0]:
        # exact nearest: other modes invent colours; plain INTER_NEAREST shifts masks against their images
        framed = cv2.resize(framed, (canvas.resize, canvas.resize), interpolation=cv2.INTER_NEAREST_EXACT)
    return framed


def herlev(raw_dir: Path, out_dir: Path, canvas: Canvas = Canvas(), categories: list[str] | None = None,
           colours: dict[str, RGB] | None = None, ratios: tuple[float, ...] | None = (0.8, 0.1, 0.1), seed: int = 137,
           keep_unlabelled: bool = False) -> ImportResult:
    """Import Herlev categories into `<out>/all`: framed cell images and masks with the nucleus in its category colour.

    Images without a `-d.bmp` are listed in `skipped` (and framed into `<out>/unlabelled/images` with
    keep_unlabelled, e.g. for inference). A folder of `.BMP` files with no category folders is one category,
    named after the folder.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: no such folder")
    colours = {**HERLEV_COLOURS, **(colours or {})}
    folders = sorted(d for d in raw_dir.iterdir() if d.is_dir()) or [raw_dir]
    if categories:
        folders = [d for d in folders if d.name in categories]
    rgb_map: dict[RGB, int] = {(0, 0, 0): 0}
    written = unlabelled = 0
    skipped: list[str] = []
    for folder in folders:
        colour = colours.get(folder.name, colours["severe_dysplastic"])
        segmentations = {p.stem.lower().removesuffix("-d"): p for p in list_images(folder)
                         if p.stem.lower().endswith("-d")}
        for path in list_images(folder):
            if path.stem.lower().endswith("-d"):
                continue
            seg_path = segmentations.get(path.stem.lower())
            if seg_path is None and not keep_unlabelled:
                skipped.append(f"{path}: no mask {path.stem}-d.bmp")
                continue
            try:
                image = read_image(path)  # (H, W, 3) RGB
                fill = image[-2, -2].copy()  # the seed's canvas colour: a pixel near the bottom-right corner
                framed = frame(image, canvas, fill, canvas.seamless)
                mask = None
                if seg_path is not None:
                    segmentation = read_mask(seg_path)
                    if segmentation.ndim != 3 or segmentation.shape[:2] != image.shape[:2]:
                        raise DataError(f"{seg_path}: expected an RGB image the size of {path.name}")
                    mask = np.zeros_like(segmentation)
                    mask[nucleus_region(segmentation)] = colour
                    mask = _frame_mask(mask, canvas)
            except DataError as exc:
                skipped.append(str(exc))
                continue
            write_pair(out_dir, path.stem, framed, mask)
            if mask is None:
                skipped.append(f"{path}: no mask {path.stem}-d.bmp; framed into unlabelled/images")
                unlabelled += 1
            else:
                rgb_map.setdefault(colour, len(rgb_map))
                written += 1
    size = canvas.resize or canvas.crop or canvas.size
    binary = len(rgb_map) == 2
    return finish_import(out_dir, written, unlabelled, skipped, None if binary else rgb_map, (size, size), ratios,
                         HERLEV_GROUP_BY, seed)
