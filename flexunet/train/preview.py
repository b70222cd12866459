"""Per-epoch previews: masks of a few [infer] images after every epoch (epoch_change_infer), and tiled ones
(epoch_change_tiled_infer)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from flexunet.config.schema import Config
from flexunet.console import say
from flexunet.errors import DataError
from flexunet.predict import predictor_from_config
from flexunet.train.step import StepSettings


class EpochPreview:
    """Per-epoch masks of the first [train] num_infer_images of [infer] images_dir: `Epoch_<n>_<stem>.png`.

    With epoch_change_tiled_infer, also tiled masks of [tiledinfer] images_dir (else [infer]'s) in
    epoch_change_tiled_infer_dir; those images may be huge, so only their paths are kept between epochs.
    """

    def __init__(self, cfg: Config, folder: Path, log: Callable[[str], None] = say) -> None:
        from flexunet.data.io import read_image
        from flexunet.data.pairing import list_image_files

        self.cfg, self.folder = cfg, folder
        self.images: list[tuple[str, np.ndarray]] = []
        if cfg.train.epoch_change_infer and cfg.infer.images_dir and cfg.train.num_infer_images > 0:
            try:  # a folder, an image file or a glob, as infer takes them
                files = list_image_files(cfg.infer.images_dir, cfg.infer.where("images_dir"))
            except DataError as exc:
                log(f"note: {exc}; per-epoch previews are off")
                files = []
            self.images = [(f.stem, read_image(f, cfg.model.image_channels, cfg.image.color_order))
                           for f in files[: cfg.train.num_infer_images]]
        self.tiled_files: list[Path] = []
        tiled_dir = cfg.tiledinfer.images_dir or cfg.infer.images_dir
        if cfg.train.epoch_change_tiled_infer and tiled_dir and cfg.train.num_infer_images > 0:
            self.tiled_files = list_image_files(tiled_dir, "[tiledinfer] images_dir")[: cfg.train.num_infer_images]

    def write(self, model: nn.Module, epoch: int, step: StepSettings) -> None:
        """This epoch's previews; `epoch` is numbered from 1, as in every file and message."""
        from flexunet.data.io import read_image, write_image

        model.eval()
        if self.images:
            whole = predictor_from_config(self.cfg, model, step.device, tta=False, channels_last=step.channels_last)
            for (stem, _), labels in zip(self.images, whole.labels([im for _, im in self.images]), strict=True):
                write_image(self.folder / f"Epoch_{epoch}_{stem}.png", whole.space.mask_pixels(labels))
        if self.tiled_files:
            tiled = predictor_from_config(self.cfg, model, step.device, tiled=True, tta=False)
            for path in self.tiled_files:
                image = read_image(path, self.cfg.model.image_channels, self.cfg.image.color_order)
                [labels] = tiled.labels([image])
                target = Path(self.cfg.train.epoch_change_tiled_infer_dir) / f"Epoch_{epoch}_{path.stem}.png"
                write_image(target, tiled.space.mask_pixels(labels))
