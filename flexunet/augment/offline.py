"""Augmented samples on disk: a preview grid to check the [augmentor] settings, and an offline augmented dataset.

Both use the [augmentor] settings even when [model] generator is off, so the operations can be looked at before
training with them. Samples come at model size, exactly as training would see them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flexunet.augment.augmenter import Augmenter
from flexunet.config.folders import check_output_folders
from flexunet.config.schema import Config
from flexunet.data import make_dataset, pairs_for
from flexunet.data.dataset import SegmentationDataset
from flexunet.data.io import write_image
from flexunet.errors import DataError, FlexunetError
from flexunet.labels import LabelSpace

_BATCH = 8


def preview_grid(cfg: Config, n: int, out_path: Path, seed: int) -> Path:
    """Write one PNG of `n` augmented [train] samples, each image beside its coloured mask; returns its path."""
    if n < 1:
        raise FlexunetError(f"preview of {n} samples: ask for at least 1")
    dataset = _train_dataset(cfg)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    indices = [order[i % len(order)] for i in range(n)]
    augmenter = Augmenter.from_config(cfg)
    tiles = []
    for images, labels in _batches(dataset, indices):
        images, labels = augmenter(images, labels, generator)
        for image, label in zip(_to_rgb(images, cfg), _colour_masks(labels, cfg), strict=True):
            gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
            tiles.append(np.concatenate([image, gap, label], axis=1))
    out_path = Path(out_path).with_suffix(".png")
    write_image(out_path, _mosaic(tiles))
    return out_path


def augment_offline(cfg: Config, out_dir: Path, copies: int, seed: int) -> int:
    """Write `copies` augmented versions of every [train] pair to out_dir/images and out_dir/masks; returns the count.

    Files are PNG (a JPEG mask would blur its labels). Mask names follow [mask] mask_suffix so the same config
    can read the folder back. Binary masks are 0/255 grey, multi-class masks use the rgb_map colours.
    An existing non-empty folder is refused: an earlier result is never overwritten; so is one that is or holds an
    input folder of `cfg`.
    """
    if copies < 1:
        raise FlexunetError(f"offline augmentation with {copies} copies: ask for at least 1")
    out_dir = Path(out_dir)
    check_output_folders(cfg, [("augment --offline", out_dir)])
    images_dir, masks_dir = out_dir / "images", out_dir / "masks"
    for folder in (images_dir, masks_dir):
        if folder.is_dir() and any(folder.iterdir()):
            raise DataError(f"{folder}: already holds files; choose a new output folder")
    dataset = _train_dataset(cfg)
    augmenter = Augmenter.from_config(cfg)
    generator = torch.Generator().manual_seed(seed)
    written = 0
    for copy in range(copies):
        for start in range(0, len(dataset), _BATCH):
            indices = list(range(start, min(start + _BATCH, len(dataset))))
            images, labels = next(_batches(dataset, indices))
            images, labels = augmenter(images, labels, generator)
            for i, image, mask in zip(indices, _to_rgb(images, cfg), _masks_to_write(labels, cfg), strict=True):
                stem = f"{dataset.pairs[i].image.stem}_aug{copy + 1}"
                write_image(images_dir / f"{stem}.png", image)
                write_image(masks_dir / f"{stem}{cfg.mask.mask_suffix}.png", mask)
                written += 1
    return written


def _train_dataset(cfg: Config) -> SegmentationDataset:
    dataset = make_dataset(cfg, pairs_for(cfg, "train"))
    if len(dataset) == 0:
        raise DataError(f"{cfg.train.images_dir}: no image/mask pairs to augment")
    return dataset


def _batches(dataset: SegmentationDataset, indices: list[int]) -> Iterator[tuple[Tensor, Tensor]]:
    """Float images (N, C, H, W) in [0, 1] and long labels (N, H, W), `_BATCH` samples at a time."""
    for start in range(0, len(indices), _BATCH):
        items = [dataset[i] for i in indices[start:start + _BATCH]]
        yield (torch.stack([im for im, _ in items]).float() / 255, torch.stack([lb for _, lb in items]).long())


def _to_rgb(images: Tensor, cfg: Config) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB arrays, whatever the channel count and order fed to the network."""
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[3] == 1:
        array = np.repeat(array, 3, axis=3)
    elif cfg.image.color_order == "BGR":
        array = array[..., ::-1]
    return [np.ascontiguousarray(a) for a in array]


def _training_masks(cfg: Config) -> LabelSpace:
    """Masks as the dataset reads them back: binary 0/255 grey (black/white when coloured), whatever [segmentation]
    says about infer's masks; multi-class in their rgb_map colours."""
    space = LabelSpace.from_config(cfg)
    return replace(space, colours=((0, 0, 0), (255, 255, 255)), colorize=False) if space.binary else space


def _colour_masks(labels: Tensor, cfg: Config) -> list[np.ndarray]:
    """(H, W, 3) colour masks for viewing: binary foreground white, classes in their rgb_map colours."""
    space = replace(_training_masks(cfg), colorize=True)
    return [space.mask_pixels(lb) for lb in labels.cpu().numpy()]


def _masks_to_write(labels: Tensor, cfg: Config) -> list[np.ndarray]:
    """Masks as the dataset reads them back: 0/255 grey (binary) or rgb_map colours (multi-class)."""
    space = _training_masks(cfg)
    return [space.mask_pixels(lb) for lb in labels.cpu().numpy()]


def _mosaic(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles of equal size in a near-square grid, separated by white lines."""
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * (h + 4) - 4, cols * (w + 4) - 4, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = tile
    return sheet
