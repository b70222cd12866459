"""Masks and overlays as written by inference: colours, thresholds, no uint8 wrap-around."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexunet.config import config_from_dict
from flexunet.data.io import read_image
from flexunet.infer.predict import FileSettings, write_prediction
from flexunet.labels import overlay
from flexunet.predict import resize_probs
from flexunet.labels import LabelSpace


def test_overlay_blends_without_wraparound() -> None:
    image = np.full((9, 9, 3), 250, np.uint8)
    labels = np.zeros((9, 9), np.uint8)
    labels[2:7, 2:7] = 1
    colours = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    out = overlay(image, labels, colours, alpha=0.4)
    assert out.dtype == np.uint8 and out.min() >= 250  # the seed's uint8 += wrapped 250 + 255 to 249
    assert (out[0, 0] == 250).all()  # background away from the outline untouched
    assert (out[4, 4] == round(0.6 * 250 + 0.4 * 255)).all()  # blended interior


def test_binary_mask_grey_or_colorized() -> None:
    labels = np.array([[0, 1]], np.uint8)
    plain = config_from_dict({"model": {"num_classes": 1}})
    assert LabelSpace.from_config(plain).mask_pixels(labels).tolist() == [[0, 255]]
    coloured = config_from_dict({"model": {"num_classes": 1}, "segmentation": {"colorize": True, "white": "green"}})
    assert LabelSpace.from_config(coloured).mask_pixels(labels).tolist() == [[[0, 0, 0], [0, 255, 0]]]


def test_multiclass_mask_uses_rgb_map_colours() -> None:
    cfg = config_from_dict({"model": {"num_classes": 3}, "mask": {"rgb_map": {(0, 0, 0): 0, (0, 0, 255): 2, (255, 0, 0): 1}}})
    assert list(LabelSpace.from_config(cfg).colours) == [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    assert LabelSpace.from_config(cfg).mask_pixels(np.array([[2, 1]], np.uint8)).tolist() == [[[0, 0, 255], [255, 0, 0]]]


def test_probabilities_threshold_argmax_and_resize() -> None:
    binary = LabelSpace.from_config(config_from_dict({"model": {"num_classes": 1}}))
    strict = LabelSpace.from_config(config_from_dict({"model": {"num_classes": 1}, "infer": {"threshold": 0.8}}))
    three = LabelSpace.from_config(config_from_dict({"model": {"num_classes": 3}}))
    assert binary.labels(np.array([[[0.2, 0.7]]])).tolist() == [[0, 1]]
    assert strict.labels(np.array([[[0.2, 0.7]]])).tolist() == [[0, 0]]
    assert three.labels(np.array([[[0.6]], [[0.3]], [[0.1]]])).tolist() == [[0]]
    up = resize_probs(np.array([[[0.0, 1.0]]], np.float32), width=4, height=2)
    assert up.shape == (1, 2, 4) and up[0, 0, 0] == 0.0 and up[0, 0, 3] == 1.0


def test_outline_takes_the_colour_of_its_region() -> None:
    image = np.zeros((12, 12, 3), np.uint8)
    labels = np.zeros((12, 12), np.uint8)
    labels[2:5, 2:5] = 1
    labels[7:10, 7:10] = 2
    colours = np.array([[0, 0, 0], [0, 255, 0], [255, 0, 0]], np.uint8)
    out = overlay(image, labels, colours, alpha=0.5)
    assert out[6, 6].tolist() == [255, 0, 0]  # rim just outside the class-2 square is class-2 red, not class-1 green
    assert out[1, 1].tolist() == [0, 255, 0]


def test_binary_overlay_in_merged_dir_is_visible(tmp_path: Path) -> None:
    """The default binary colours are black/white; white at alpha 0.4 over a pale stain moved it ~10 grey levels."""
    cfg = config_from_dict({"model": {"num_classes": 1}})
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 1
    for level in (235, 128, 20):  # pale stain, mid grey, dark background
        image = np.full((16, 16, 3), level, np.uint8)
        write_prediction(tmp_path / "a.png", image, labels, LabelSpace.from_config(cfg), FileSettings.from_config(cfg),
                         tmp_path / "out", tmp_path / "merged")
        merged = read_image(tmp_path / "merged" / "a.png").astype(int)
        change = np.abs(merged - image).max(axis=2)  # (H, W) largest channel change
        assert change[6:10, 6:10].min() >= 50, level  # interior of the mask: plainly visible
        assert change[0, 0] == 0  # away from the mask: the image as it was


def test_a_coloured_binary_mask_colour_is_kept_for_overlays() -> None:
    cfg = config_from_dict({"model": {"num_classes": 1}, "segmentation": {"white": "red"}})
    assert LabelSpace.from_config(cfg).overlay_colours().tolist() == [[0, 0, 0], [255, 0, 0]]
