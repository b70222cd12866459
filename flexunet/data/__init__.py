"""Data: pairing files, decoding masks, datasets."""
from flexunet.data.dataset import (
    SegmentationDataset,
    SplitDatasets,
    build_datasets,
    make_dataset,
    mask_decoding,
    pairs_for,
)
from flexunet.data.masks import MaskDecoding, colorize_labels, decode_mask, decode_rgb_mask, palette
from flexunet.data.pairing import IMAGE_EXTENSIONS, Pair, list_image_files, pair_files

__all__ = [
    "IMAGE_EXTENSIONS", "MaskDecoding", "Pair", "SegmentationDataset", "SplitDatasets", "build_datasets",
    "colorize_labels", "decode_mask", "decode_rgb_mask", "list_image_files", "make_dataset", "mask_decoding",
    "pair_files", "pairs_for", "palette",
]
