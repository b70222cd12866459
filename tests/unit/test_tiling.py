"""Sliding-window inference: tiles cover every pixel, blending is a weighted mean, tiled = whole image without seams."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from flexunet.config import config_from_dict
from flexunet.predict import Predictor, SlidingWindow
from flexunet.predict.tiling import (
    Box,
    and_labels,
    blend,
    gaussian_weights,
    gaussian_weights_1d,
    tile_boxes,
    tile_starts,
    weight_sums,
)
from flexunet.labels import LabelSpace

SIZES = [64, 65, 100, 127, 128, 129, 191, 255, 256, 257, 333, 1000]

BINARY = LabelSpace.from_config(config_from_dict({"model": {"num_classes": 1}}))


def sliding_window_probs(model: nn.Module, image: np.ndarray, tile: int, overlap: int, tta: bool = False,
                         batch_size: int = 4, background: int = 0) -> np.ndarray:
    """The tiled probabilities `flexunet infer --tiled` computes: a Predictor with a SlidingWindow tiler."""
    predictor = Predictor(model, BINARY, SlidingWindow(tile, overlap, background), torch.device("cpu"), tta, batch_size)
    return predictor.probs([image])[0]


@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 16), (64, 63), (32, 7)])
@pytest.mark.parametrize("height", SIZES)
def test_boxes_cover_the_image_inside_its_borders(height: int, tile: int, overlap: int) -> None:
    width = SIZES[(SIZES.index(height) * 7 + 3) % len(SIZES)]  # a different odd size per case
    boxes = tile_boxes(height, width, tile, overlap)
    covered = np.zeros((height, width), np.int32)
    for box in boxes:
        assert box.size == tile and 0 <= box.top <= height - tile and 0 <= box.left <= width - tile
        covered[box.slices] += 1
    assert covered.min() >= 1
    for length in (height, width):
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(tile - (b - a) >= overlap for a, b in itertools.pairwise(starts))  # every overlap at least `overlap`
        assert len(starts) == 1 + -(-(length - tile) // (tile - overlap))  # no more tiles than needed


def test_tile_starts_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)
    with pytest.raises(ValueError, match="pad"):
        tile_starts(20, 32, 8)


def test_gaussian_weight_peaks_in_the_centre_and_stays_positive() -> None:
    g = gaussian_weights_1d(64)
    assert g.argmax() in (31, 32) and g.max() == pytest.approx(1, abs=5e-3) and g.min() > 0
    assert np.allclose(g, g[::-1])
    assert gaussian_weights(64).shape == (64, 64)


@pytest.mark.parametrize("height,width,tile,overlap", [(100, 77, 32, 8), (64, 64, 64, 0), (257, 130, 64, 31)])
def test_blending_a_constant_gives_the_same_constant(height: int, width: int, tile: int, overlap: int) -> None:
    boxes = tile_boxes(height, width, tile, overlap)
    tiles = [np.full((2, tile, tile), 0.3, np.float32)] * len(boxes)
    out = blend(tiles, boxes, height, width)
    assert out.shape == (2, height, width)
    assert np.allclose(out, 0.3, atol=1e-6)


def test_separable_weight_sum_equals_the_summed_weight_map() -> None:
    boxes = tile_boxes(90, 70, 32, 10)
    rows, cols = weight_sums(90, 70, boxes, gaussian_weights_1d(32))
    dense = np.zeros((90, 70), np.float64)
    for box in boxes:
        dense[box.slices] += gaussian_weights(32)
    assert np.allclose(np.outer(rows, cols), dense, rtol=1e-5)


def test_blend_is_a_weighted_mean_of_two_tiles() -> None:
    boxes = [Box(0, 0, 4), Box(0, 4, 4)]  # no overlap: each pixel takes its own tile's value
    tiles = [np.full((1, 4, 4), 1.0, np.float32), np.full((1, 4, 4), 3.0, np.float32)]
    out = blend(tiles, boxes, 4, 8)
    assert np.allclose(out[0, :, :4], 1) and np.allclose(out[0, :, 4:], 3)


def test_and_labels_keeps_tiled_labels_only_on_whole_image_foreground() -> None:
    tiled = np.array([[0, 1, 2], [1, 1, 0]], np.uint8)
    whole = np.array([[1, 0, 1], [1, 1, 1]], np.uint8)
    assert and_labels(tiled, whole).tolist() == [[0, 0, 2], [1, 1, 0]]


class ConvNet(nn.Module):
    """Three 3x3 convolutions, no pooling: translation-equivariant away from the zero-padded border (radius 3)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(8, 1, 3, padding=1))
        for p in self.body.parameters():
            p.data.mul_(2.0)  # larger weights: a strong border effect, so a missing blend would show

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def structured_image(height: int, width: int) -> np.ndarray:
    """Stripes, a disc and noise: structure at several scales and in every direction."""
    y, x = np.mgrid[:height, :width]
    rng = np.random.default_rng(1)
    r = 128 + 90 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = np.where((x - width / 2) ** 2 + (y - height / 3) ** 2 < (min(height, width) / 4) ** 2, 220, 30)
    b = rng.integers(0, 256, (height, width))
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def whole_probs(model: nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return torch.sigmoid(model(x))[0].numpy()


def test_tiled_output_equals_whole_image_output_without_seams() -> None:
    model = ConvNet().eval()
    image = structured_image(203, 171)
    tile, overlap = 48, 16
    tiled = sliding_window_probs(model, image, tile, overlap, batch_size=5)
    whole = whole_probs(model, image)
    assert tiled.shape == whole.shape == (1, 203, 171)
    border = 3  # the receptive-field radius: the whole-image prediction itself sees padding there
    diff = np.abs(tiled - whole)[0, border:-border, border:-border]
    assert diff.max() < 5e-3 and diff.mean() < 1e-4
    # seams: pixels within the receptive radius of a tile edge (where one tile saw its own padding) vs the rest
    edges = np.zeros((203, 171), bool)
    for box in tile_boxes(203, 171, tile, overlap):
        for line in (box.top, box.top + tile - 1):
            edges[max(line - border, 0) : line + border + 1, box.left : box.left + tile] = True
        for line in (box.left, box.left + tile - 1):
            edges[box.top : box.top + tile, max(line - border, 0) : line + border + 1] = True
    edges = edges[border:-border, border:-border]
    seam, elsewhere = diff[edges].mean(), diff[~edges].mean()
    naive = np.abs(naive_tiles(model, image, tile, overlap) - whole)[0, border:-border, border:-border]
    assert naive[edges].mean() > 20 * max(seam, 1e-6)  # the seam measure detects seams where there are some
    assert seam < 5e-4, (seam, elsewhere)


def naive_tiles(model: nn.Module, image: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """The seed's scheme without margins: later tiles overwrite earlier ones (bug 36)."""
    out = np.zeros((1, *image.shape[:2]), np.float32)
    for box in tile_boxes(*image.shape[:2], tile, overlap):
        out[(slice(None), *box.slices)] = whole_probs(model, image[box.slices])
    return out


@pytest.mark.parametrize("height,width", [(1, 1), (17, 90), (48, 48), (49, 47), (130, 3)])
def test_any_size_is_padded_not_cropped(height: int, width: int) -> None:
    model = ConvNet().eval()
    image = structured_image(height, width)
    probs = sliding_window_probs(model, image, 48, 8, background=128)
    assert probs.shape == (1, height, width) and np.isfinite(probs).all()


def test_tta_on_tiles_averages_flips() -> None:
    model = ConvNet().eval()
    image = structured_image(70, 90)
    plain = sliding_window_probs(model, image, 32, 8)
    tta = sliding_window_probs(model, image, 32, 8, tta=True)
    flipped = sliding_window_probs(model, image[:, ::-1].copy(), 32, 8)[:, :, ::-1]
    assert not np.allclose(plain, tta)
    # the flip-averaged prediction is closer to the average of the plain and mirrored predictions than plain alone
    assert np.abs(tta - (plain + flipped) / 2).mean() < np.abs(tta - plain).mean()


def test_the_default_overlap_follows_the_tile_size() -> None:
    from flexunet.config import config_from_dict
    from flexunet.errors import ConfigError
    from flexunet.predict import tile_settings

    small = config_from_dict({"model": {"image_width": 32, "image_height": 32}})
    assert tile_settings(small) == (32, 8)  # the seed's fixed 64 failed for every model of 64 px or less
    large = config_from_dict({"model": {"image_width": 512, "image_height": 512}})
    assert tile_settings(large) == (512, 64)
    given = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "tiledinfer": {"overlapping": 40}})
    with pytest.raises(ConfigError, match=r"\[tiledinfer\] overlapping = 40: must be smaller than the tile size 32"):
        tile_settings(given)
