"""Pairing by stem, mask decoding (binary thresholds, rgb_map with anti-aliased colours), clear data errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.config import config_from_dict
from flexunet.data import MaskDecoding, build_datasets, decode_mask, decode_rgb_mask, pair_files
from flexunet.data.masks import binarize_mask, unmapped_colours
from flexunet.errors import DataError
from tests.conftest import write_disc_pairs

RGB_MAP = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}


def test_rgb_decoding_snaps_antialiased_colours_and_reports_far_pixels() -> None:
    mask = np.array([[[0, 0, 0], [0, 250, 4]], [[251, 3, 0], [128, 128, 0]]], np.uint8)
    labels, far = decode_rgb_mask(mask, RGB_MAP, tolerance=40)
    assert labels.tolist() == [[0, 1], [2, 1]]  # (128,128,0) is nearest to green
    assert far == pytest.approx(0.25)
    (colour, nearest, fraction), = unmapped_colours(mask, RGB_MAP, 40)
    assert colour == (128, 128, 0) and nearest == (0, 255, 0) and fraction == pytest.approx(0.25)


def test_rgb_map_values_are_used_not_dict_order() -> None:
    mask = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 0]]], np.uint8)
    # insertion order (green, black, red) differs from the values (2, 0, 1): position-as-label would give [[2, 0, 1]]
    labels, _ = decode_rgb_mask(mask, {(0, 255, 0): 2, (0, 0, 0): 0, (255, 0, 0): 1}, 40)
    assert labels.tolist() == [[1, 2, 0]]


def test_binary_threshold_ignores_jpeg_noise() -> None:
    grey = np.array([[0, 5, 40], [130, 250, 61]], np.uint8)
    assert binarize_mask(grey, 60).tolist() == [[0, 0, 0], [1, 1, 1]]
    labels, far = decode_mask(grey, MaskDecoding(num_classes=1, threshold=127))
    assert labels.tolist() == [[0, 0, 0], [1, 1, 0]] and far == 0.0


def test_blur_then_threshold_does_not_dilate() -> None:
    grey = np.zeros((9, 9), np.uint8)
    grey[3:6, 3:6] = 255
    out = binarize_mask(grey, 127, blur_size=(3, 3))
    assert out.sum() <= 9  # the seed's blur-then-bool grew the 3x3 square to 5x5


def test_pairs_by_stem_with_suffix_and_any_case(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for stem, ext in (("b", ".JPG"), ("a", ".png"), ("c", ".Tiff")):
        cv2.imwrite(str(tmp_path / "img" / f"{stem}{ext}"), np.zeros((4, 4, 3), np.uint8))
    for stem in ("c", "a", "b"):
        cv2.imwrite(str(tmp_path / "msk" / f"{stem}_segmentation.png"), np.zeros((4, 4), np.uint8))
    pairs = pair_files(str(tmp_path / "img"), str(tmp_path / "msk"), mask_suffix="_segmentation")
    assert [p.image.name for p in pairs] == ["a.png", "b.JPG", "c.Tiff"]
    assert [p.mask.name for p in pairs] == ["a_segmentation.png", "b_segmentation.png", "c_segmentation.png"]


def test_wildcard_folders_pair_within_the_same_match(tmp_path: Path) -> None:
    for cls in ("A", "B"):
        write_disc_pairs(tmp_path / "train" / cls, 2, size=8)
    pairs = pair_files(str(tmp_path / "train" / "*" / "images"), str(tmp_path / "train" / "*" / "masks"))
    assert len(pairs) == 4
    assert all(p.image.parent.parent == p.mask.parent.parent for p in pairs)


def test_unpaired_files_are_named(tmp_path: Path) -> None:
    write_disc_pairs(tmp_path, 3, size=8)
    (tmp_path / "masks" / "img_001.png").unlink()
    with pytest.raises(DataError, match=r"img_001\.png: no mask with stem 'img_001'"):
        pair_files(str(tmp_path / "images"), str(tmp_path / "masks"))
    (tmp_path / "images" / "img_001.png").unlink()
    cv2.imwrite(str(tmp_path / "masks" / "orphan.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"orphan\.png: no image with stem 'orphan'"):
        pair_files(str(tmp_path / "images"), str(tmp_path / "masks"))


def test_missing_folder_and_corrupt_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        pair_files(str(tmp_path / "nope"), str(tmp_path / "nope2"))
    write_disc_pairs(tmp_path / "d", 2, size=8)
    (tmp_path / "d" / "images" / "img_000.png").write_bytes(b"\x89PNG truncated")
    cfg = config_from_dict({
        "model": {"image_width": 8, "image_height": 8, "num_layers": 2},
        "train": {"images_dir": str(tmp_path / "d" / "images"), "masks_dir": str(tmp_path / "d" / "masks")},
    })
    data = build_datasets(cfg)
    with pytest.raises(DataError, match=r"img_000\.png: not a readable image"):
        [data.train[i] for i in range(len(data.train))] + [data.valid[i] for i in range(len(data.valid))]


def test_size_mismatch_between_image_and_mask(tmp_path: Path) -> None:
    write_disc_pairs(tmp_path, 2, size=16)
    cv2.imwrite(str(tmp_path / "masks" / "img_000.png"), np.zeros((8, 8), np.uint8))
    cfg = config_from_dict({
        "model": {"image_width": 16, "image_height": 16, "num_layers": 2},
        "train": {"images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks"), "validation_split": 0.5},
    })
    data = build_datasets(cfg)
    with pytest.raises(DataError, match="mask is 8x8 but its image img_000.png is 16x16"):
        [data.train[i] for i in range(len(data.train))] + [data.valid[i] for i in range(len(data.valid))]


def test_dataset_items_have_model_size_and_labels(tmp_path: Path) -> None:
    write_disc_pairs(tmp_path, 4, size=40)
    cfg = config_from_dict({
        "model": {"image_width": 32, "image_height": 32, "num_layers": 3},
        "train": {"images_dir": str(tmp_path / "images"), "masks_dir": str(tmp_path / "masks")},
    })
    data = build_datasets(cfg)
    image, labels = data.train[0]
    assert tuple(image.shape) == (3, 32, 32) and str(image.dtype) == "torch.uint8"
    assert tuple(labels.shape) == (32, 32) and set(labels.unique().tolist()) == {0, 1}
    assert len(data.train) + len(data.valid) == 4 and any("holding out" in n for n in data.notes)
