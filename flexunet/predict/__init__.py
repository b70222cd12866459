"""One `Predictor` for every place a model turns images into masks: epoch previews, evaluation, infer (whole image,
sliding window, TTA, ONNX) and the Python API.

A Predictor holds the model (any function from a float batch in [0, 1] to logits: an `nn.Module`, a compiled
module or an ONNX session), the `LabelSpace`, TTA, the device, `batch_size` (model inputs per forward pass: images
for `WholeImage`, tiles for `SlidingWindow`) and a tiler chosen once, as MONAI's SimpleInferer and
SlidingWindowInferer are. `.probs(images)` and `.labels(images)` answer at each image's original size.

    predictor = predictor_from_config(cfg, model, torch.device("cpu"), tiled=False)
    masks = predictor.labels([read_image(path, 3, "RGB")])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexunet.config.schema import Config
from flexunet.data.io import resize_image
from flexunet.errors import ConfigError
from flexunet.labels import LabelSpace
from flexunet.predict.forward import Forward, for_inference, forward_probs, resize_probs, to_input
from flexunet.predict.tiling import TileHook, and_labels, sliding_window_probs

Postprocess = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (labels (H, W), probs (C, H, W)) -> labels (H, W)
CropsToProbs = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class WholeImage:
    """Each image resized to the model input (width x height); its probabilities resized back (bilinear)."""

    width: int
    height: int

    def probs(self, images: Sequence[np.ndarray], forward: CropsToProbs, batch_size: int) -> list[np.ndarray]:
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            probs = forward([resize_image(im, self.width, self.height) for im in chunk])
            out += [resize_probs(p, im.shape[1], im.shape[0]) for p, im in zip(probs, chunk, strict=True)]
        return out


@dataclass(frozen=True)
class SlidingWindow:
    """Overlapping `tile`-px windows at the image's own scale, Gaussian-blended (predict/tiling.py). With
    `and_whole` (seed [tiledinfer] bitwise_blending), a label is kept only where that whole-image view agrees."""

    tile: int
    overlap: int
    background: int = 0  # grey value that pads images smaller than one tile
    and_whole: WholeImage | None = None
    on_tile: TileHook | None = None  # sees each tile and its probabilities (debug dumps, tests)

    def probs(self, images: Sequence[np.ndarray], forward: CropsToProbs, batch_size: int) -> list[np.ndarray]:
        return [sliding_window_probs(forward, im, self.tile, self.overlap, batch_size, self.background, self.on_tile)
                for im in images]


Tiler = WholeImage | SlidingWindow


@dataclass(frozen=True)
class Prediction:
    """One image's probabilities (C, H, W) and labels (H, W), at its original size."""

    probs: np.ndarray
    labels: np.ndarray


@dataclass
class Predictor:
    """Images (uint8, H x W x C, any size) -> probabilities and labels at that size; see the module docstring."""

    model: Forward
    space: LabelSpace
    tiler: Tiler
    device: torch.device
    tta: bool = False
    batch_size: int = 4
    channels_last: bool = False  # feed channels_last batches (the layout `for_inference` gives CPU models)
    postprocess: Postprocess | None = None  # applied to every label map, after thresholding

    @property
    def images_per_pass(self) -> int:
        """How many images a caller should hand over at once: a batch for WholeImage, one for SlidingWindow (its
        tiles form the batches), so memory holds one batch of inputs either way."""
        return self.batch_size if isinstance(self.tiler, WholeImage) else 1

    def batch_probs(self, x: Tensor) -> Tensor:
        """Probabilities (N, C, H, W) of a float batch already at the model's input size (TTA included)."""
        return forward_probs(self.model, x, self.space, self.tta)

    def _crops_to_probs(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.batch_probs(to_input(crops, self.device, self.channels_last)).cpu().numpy()

    def probs(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities (C, H0, W0) per image, at its original size."""
        return self.tiler.probs(images, self._crops_to_probs, self.batch_size)

    def label_map(self, probs: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
        """Labels (H, W) of probabilities (C, H, W): `space.labels`, the seed's bitwise AND with the whole-image
        view for tiled predictions when set (needs the `image`), then `postprocess`. Evaluation calls this on
        probabilities it resized itself, so its labels are the masks infer writes."""
        labels = self.space.labels(probs)
        if image is not None and isinstance(self.tiler, SlidingWindow) and self.tiler.and_whole is not None:
            whole = self.tiler.and_whole.probs([image], self._crops_to_probs, 1)[0]
            labels = and_labels(labels, self.space.labels(whole))
        return labels if self.postprocess is None else self.postprocess(labels, probs)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Probabilities and labels (`label_map`) per image, at its original size."""
        return [Prediction(probs, self.label_map(probs, image))
                for image, probs in zip(images, self.probs(images), strict=True)]

    def labels(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps (H0, W0) per image: what `flexunet infer` writes as masks."""
        return [p.labels for p in self.predict(images)]


def tile_settings(cfg: Config) -> tuple[int, int]:
    """(tile, overlap) from [tiledinfer] split_size (default: the model input size) and overlapping (default: a
    quarter of the tile, at most 64 px: the seed's fixed 64 failed for every model of 64 px or less)."""
    t = cfg.tiledinfer
    tile = t.split_size or min(cfg.model.image_width, cfg.model.image_height)
    if t.overlapping is None:
        return tile, min(64, tile // 4)
    if t.overlapping >= tile:
        raise ConfigError(f"{t.where('overlapping')} = {t.overlapping}: must be smaller than the tile size {tile} "
                          "([tiledinfer] split_size, default the model input size)")
    return tile, t.overlapping


def tiler_from_config(cfg: Config, tiled: bool, on_tile: TileHook | None = None) -> Tiler:
    """WholeImage at [model] image_width x image_height, or SlidingWindow from [tiledinfer]."""
    whole = WholeImage(cfg.model.image_width, cfg.model.image_height)
    if not tiled:
        return whole
    tile, overlap = tile_settings(cfg)
    return SlidingWindow(tile, overlap, cfg.tiledinfer.background,
                         whole if cfg.tiledinfer.bitwise_blending else None, on_tile)


def predictor_from_config(cfg: Config, model: Forward, device: torch.device, tiled: bool = False,
                          tta: bool | None = None, batch_size: int | None = None, channels_last: bool = False,
                          postprocess: Postprocess | None = None) -> Predictor:
    """The Predictor `flexunet infer` uses: the config's LabelSpace, [infer] tta and batch_size unless given."""
    return Predictor(model, LabelSpace.from_config(cfg), tiler_from_config(cfg, tiled), device,
                     cfg.infer.tta if tta is None else tta, cfg.infer.batch_size if batch_size is None else batch_size,
                     channels_last, postprocess)


__all__ = ["Prediction", "Predictor", "SlidingWindow", "WholeImage", "for_inference", "forward_probs",
           "predictor_from_config", "resize_probs", "tile_settings", "tiler_from_config", "to_input"]
