"""Datasets of image/mask pairs, streamed from disk, decoded to (image uint8 (C, H, W), labels uint8 (H, W))."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from flexunet.config.schema import Config
from flexunet.console import say
from flexunet.data.io import (
    DEFAULT_MAX_PIXELS,
    ImageTooLarge,
    check_pixel_type,
    check_size,
    read_image,
    read_mask,
    resize_image,
    resize_labels,
)
from flexunet.data.masks import MaskDecoding, decode_mask
from flexunet.data.pairing import Pair, expand_dirs, pair_files
from flexunet.data.split_file import split_stems
from flexunet.errors import ConfigError, DataError


def mask_decoding(cfg: Config) -> MaskDecoding:
    m = cfg.mask
    return MaskDecoding(
        num_classes=cfg.model.num_classes,
        threshold=m.threshold,
        blur_size=m.blur_size if m.blur else None,
        algorithm=m.algorithm,
        rgb_map=cfg.rgb_map,
        color_tolerance=m.color_tolerance,
        ignore_index=m.ignore_index,
        instances=m.kind == "instances",
    )


class SegmentationDataset(Dataset):
    """Pairs read from disk on demand, resized to the model input; optionally cached in RAM after first use."""

    def __init__(self, pairs: list[Pair], width: int, height: int, channels: int, decoding: MaskDecoding,
                 color_order: str = "RGB", cache: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.pairs = pairs
        self.max_pixels = max_pixels
        self.width, self.height, self.channels = width, height, channels
        self.decoding = decoding
        self.color_order = color_order
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Image (H, W, C) uint8 and labels (H, W) uint8 at model size, and the mask's unmapped-colour fraction."""
        image, labels, unmapped = self.load_original(index)
        return *self.to_model_size(image, labels), unmapped

    def load_original(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Image and labels at the files' own size (what evaluation scores against), and the unmapped fraction."""
        pair = self.pairs[index]
        image = read_image(pair.image, self.channels, self.color_order, self.max_pixels)
        mask = read_mask(pair.mask, self.max_pixels)
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(
                f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        labels, unmapped = decode_mask(mask, self.decoding, str(pair.mask))
        return image, labels, unmapped

    def to_model_size(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image and labels resized to the model input (labels with nearest neighbour)."""
        return resize_image(image, self.width, self.height), resize_labels(labels, self.width, self.height)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image, labels, _ = self.load(index)
        item = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(labels)
        if self._cache is not None:
            self._cache[index] = item
        return item

    def unmapped_fraction(self, max_masks: int = 64) -> float:
        """Mean fraction of mask pixels far from every rgb_map colour, over up to `max_masks` evenly spaced masks."""
        if self.decoding.is_binary or not self.pairs:
            return 0.0
        picks = np.linspace(0, len(self.pairs) - 1, min(max_masks, len(self.pairs))).round().astype(int)
        masks = (self.pairs[i].mask for i in set(picks))
        return float(np.mean([decode_mask(read_mask(m, self.max_pixels), self.decoding, str(m))[1] for m in masks]))


@dataclass(frozen=True)
class SplitDatasets:
    """Training and validation data of one run."""

    train: SegmentationDataset
    valid: SegmentationDataset
    notes: tuple[str, ...] = ()


def make_dataset(cfg: Config, pairs: list[Pair], cache: bool = False) -> SegmentationDataset:
    m = cfg.model
    return SegmentationDataset(pairs, m.image_width, m.image_height, m.image_channels, mask_decoding(cfg),
                               cfg.image.color_order, cache, cfg.image.pixel_limit())


def pairs_for(cfg: Config, section: str, warn: bool = True) -> list[Pair]:
    """Pairs of [train], [valid] or [test], with a config error when the section names no folders.

    Pairs over [image] max_pixels are left out, with one `warning:` line naming them (unless `warn` is False:
    callers that only count pairs).
    """
    data = getattr(cfg, section)
    if not data.images_dir or not data.masks_dir:
        missing = "images_dir" if not data.images_dir else "masks_dir"
        raise ConfigError(f"{data.where(missing)}: required for this step "
                          "(a folder, or a pattern like train/*/images/)")
    for key in ("images_dir", "masks_dir"):
        if not expand_dirs(getattr(data, key)):
            raise DataError(f"{data.where(key)} = {getattr(data, key)}: no such folder")
    pairs = pair_files(data.images_dir, data.masks_dir, cfg.mask.mask_suffix, cfg.mask.mask_file_format)
    if data.split_file:
        wanted = split_stems(data.split_file, section)
        pairs = [p for p in pairs if p.stem in wanted]
        if not pairs:
            raise DataError(f"{data.split_file}: no stem listed for split '{section}' is in {data.images_dir}")
    pairs, warning = drop_oversized(pairs, cfg.image.pixel_limit())
    if warning and warn:
        say(f"warning: [{section}] {warning}")
    return pairs


def drop_oversized(pairs: list[Pair], max_pixels: int) -> tuple[list[Pair], str | None]:
    """The pairs whose image and mask headers are within `max_pixels`, and one line naming the others (or None).

    Only headers are read: a decompression bomb is reported and skipped, never decoded.
    """
    kept, skipped = [], []
    for pair in pairs:
        try:
            check_size(pair.image, max_pixels)
            check_size(pair.mask, max_pixels)
            for path in (pair.image, pair.mask):  # 32-bit instance ids, float images: refused before a run writes
                check_pixel_type(path)
            kept.append(pair)
        except ImageTooLarge as exc:
            skipped.append(f"{exc.path.name} ({exc.size[0]}x{exc.size[1]})")
    if not skipped:
        return pairs, None
    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    return kept, f"skipped {len(skipped)} pairs over {max_pixels:,} pixels ([image] max_pixels): {shown}"


def build_datasets(cfg: Config, pairs: tuple[list[Pair], list[Pair]] | None = None) -> SplitDatasets:
    """[train] and [valid] datasets; without [valid] folders, a seeded validation_split of the training pairs.
    `pairs` (training, validation) replaces both, e.g. one fold of a cross-validation."""
    notes = []
    if pairs is not None:
        train_pairs, valid_pairs = pairs
    elif cfg.valid.images_dir or cfg.valid.masks_dir:
        train_pairs, valid_pairs = pairs_for(cfg, "train"), pairs_for(cfg, "valid")
    else:
        train_pairs = pairs_for(cfg, "train")
        if len(train_pairs) < 2:
            raise DataError(f"{cfg.train.images_dir}: need at least 2 pairs to hold out a validation set")
        shuffled = train_pairs[:]
        random.Random(cfg.train.seed).shuffle(shuffled)
        n_valid = max(1, round(len(shuffled) * cfg.train.validation_split))
        valid_pairs = sorted(shuffled[:n_valid], key=lambda p: p.image)
        train_pairs = sorted(shuffled[n_valid:], key=lambda p: p.image)
        notes.append(f"no [valid] folders: holding out {n_valid} of {len(shuffled)} training pairs "
                     f"(validation_split = {cfg.train.validation_split}, seed {cfg.train.seed})")
    train = make_dataset(cfg, train_pairs, cfg.train.cache)
    valid = make_dataset(cfg, valid_pairs, cfg.train.cache)
    unmapped = train.unmapped_fraction()
    if unmapped > 0:
        notes.append(f"{unmapped:.2%} of sampled training mask pixels are farther than {cfg.mask.color_tolerance:g} "
                     f"from every [mask] rgb_map colour (snapped to the nearest); check rgb_map if this is large")
    return SplitDatasets(train, valid, tuple(notes))
