"""Predict masks for image files: probabilities at the original size, masks and overlays written as PNG."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from flexunet.config.schema import Config
from flexunet.data.io import read_image, read_mask, resize_image, write_image
from flexunet.data.pairing import list_image_files
from flexunet.errors import DataError, OutputError
from flexunet.files import remove_temp_files
from flexunet.labels import LabelSpace
from flexunet.runs.distributed import DistContext, shard


@torch.no_grad()
def forward_probs(model: nn.Module, batch: Tensor, space: LabelSpace, tta: bool = False) -> Tensor:
    """Class probabilities (N, C, H, W) for a float batch in [0, 1], by `space.probabilities`.

    With tta, the mean over the identity, horizontal and vertical flips (each flipped back first).
    """
    views: list[tuple[int, ...]] = [(), (3,), (2,)] if tta else [()]
    total: Tensor | None = None
    for dims in views:
        x = batch.flip(dims) if dims else batch
        logits = model(x).float()
        probs = space.probabilities(logits)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    assert total is not None  # views is never empty
    return total / len(views)


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in eval mode, laid out for fast inference on `device`: channels_last weights on the CPU, where
    oneDNN's channels_last convolutions ran 2.1x faster at batch 1 and 1.16x at batch 16 than the default layout
    (seed Pap-Smear UNet; benchmarks/run.py measures both, the old layout as `contiguous_inference`). Same numbers,
    other memory layout."""
    model.eval()
    if device.type != "cpu":
        return model
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; the stub omits it


def to_input(images_hwc: Sequence[np.ndarray], device: torch.device, channels_last: bool = False) -> Tensor:
    """Stack uint8 (H, W, C) images into a float batch (N, C, H, W) in [0, 1] on `device`."""
    batch = torch.from_numpy(np.stack(images_hwc)).to(device).permute(0, 3, 1, 2).float().div_(255)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def resize_probs(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) probabilities: upsample before thresholding, not the label map, for smooth edges."""
    if probs.shape[1:] == (height, width):
        return probs
    return np.stack([cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in probs])


def predict_images(model: nn.Module, images: Sequence[np.ndarray], cfg: Config, device: torch.device,
                   tta: bool = False, batch_size: int = 4, channels_last: bool = False) -> list[np.ndarray]:
    """Probabilities (C, H0, W0) per image at its original size; each image is resized to the model input first."""
    m, space = cfg.model, LabelSpace.from_config(cfg)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        resized = [resize_image(im, m.image_width, m.image_height) for im in chunk]
        probs = forward_probs(model, to_input(resized, device, channels_last), space, tta).cpu().numpy()
        out += [resize_probs(p, im.shape[1], im.shape[0]) for p, im in zip(probs, chunk, strict=True)]
    return out


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha-blend class colours over the image where a label is not background (float math: no uint8 wrap-around)."""
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    blended = rgb.astype(np.float32)
    labels = np.where(labels < len(colours), labels, 0).astype(labels.dtype)  # [mask] ignore_index: shown unpainted
    fg = labels > 0
    blended[fg] = (1 - alpha) * blended[fg] + alpha * colours[labels[fg]].astype(np.float32)
    # outline the predicted regions so thin structures stay visible
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_GRADIENT, kernel) > 0
    nearest_class = cv2.dilate(labels, kernel)  # a rim pixel outside a region takes that region's class colour
    blended[edges] = colours[nearest_class[edges]]
    return blended.round().clip(0, 255).astype(np.uint8)


@dataclass
class InferResult:
    """What one inference pass wrote and what it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per unreadable file
    resumed: list[Path] = field(default_factory=list)  # masks kept from an earlier pass (resume)


def output_names(files: Sequence[Path], name_prefix: str = "") -> list[str]:
    """`<prefix><stem>.png` per input file; two inputs with one name (a/x.png and b/x.png, x.png and x.jpg) raise
    DataError before anything is written, so no mask ever overwrites another."""
    seen: dict[str, Path] = {}
    for path in files:
        name = f"{name_prefix}{path.stem}.png"
        if name in seen:
            raise DataError(f"{seen[name]} and {path}: both would be written as {name}; run infer once per folder, "
                            "each with its own --output, or rename one of them")
        seen[name] = path
    return list(seen)


def _readable(path: Path) -> bool:
    try:
        read_mask(path)
    except DataError:
        return False
    return True


def is_done(targets: Sequence[Path], newer_than: float | None) -> bool:
    """Resume: the mask (and overlay, when overlays are on) is kept when it was written after the checkpoint (mtime
    `newer_than`) and reads back as an image; a missing, older (other weights) or truncated one is made again."""
    if newer_than is None:
        return False
    return all(t.is_file() and t.stat().st_mtime > newer_than and _readable(t) for t in targets)


def predict_labels(model: nn.Module, images: Sequence[np.ndarray], cfg: Config, device: torch.device,
                   tta: bool = False, tiled: bool = False) -> list[np.ndarray]:
    """Label maps (H0, W0) per image: whole image resized to the model input, or sliding window at native scale."""
    if not tiled:
        probs = predict_images(model, images, cfg, device, tta, cfg.infer.batch_size)
        return [LabelSpace.from_config(cfg).labels(p) for p in probs]
    from flexunet.infer.tiling import tiled_labels

    return [tiled_labels(model, image, cfg, device, tta) for image in images]


def write_prediction(path: Path, image: np.ndarray, labels: np.ndarray, cfg: Config, output_dir: Path,
                     merged_dir: Path | None, name_prefix: str = "") -> Path:
    """`<output_dir>/<stem>.png` mask and, with a merged_dir, the overlay of the same name; returns the mask path."""
    target = output_dir / f"{name_prefix}{path.stem}.png"
    space = LabelSpace.from_config(cfg)
    write_image(target, space.mask_pixels(labels))
    if merged_dir is not None:
        shown = image if cfg.image.color_order == "RGB" else image[:, :, ::-1]
        if cfg.segmentation.blursize:
            shown = cv2.blur(shown, tuple(cfg.segmentation.blursize))
        merged = overlay(shown, labels, space.overlay_colours(), cfg.infer.overlay_alpha)
        write_image(merged_dir / f"{name_prefix}{path.stem}.png", merged)
    return target


def predict_folder(model: nn.Module, cfg: Config, images_dir: str, output_dir: Path, merged_dir: Path | None,
                   device: torch.device, tta: bool = False, name_prefix: str = "", limit: int | None = None,
                   on_image: Callable[[], None] | None = None, tiled: bool = False,
                   resume_after: float | None = None, dist_ctx: DistContext = DistContext()) -> InferResult:
    """Segment every image of `images_dir` (sorted): `<stem>.png` masks at the original size, optional overlays.

    Streams: only one batch of images ([infer] batch_size; one image when tiled) is in memory at a time.
    Unreadable files are skipped and reported, not fatal: one bad file must not lose a long batch. With
    `resume_after` (the checkpoint's mtime), masks and overlays already written after it are kept, so a stopped pass
    can go on. Each file is written atomically; a full disk stops the pass with OutputError. Under torchrun
    (`dist_ctx`) this process takes every world_size-th file of the sorted list from its rank, so each mask is
    written by exactly one process; names are checked for clashes over the whole list first.
    """
    files = list_image_files(images_dir, "[infer] images_dir")[:limit]
    names = output_names(files, name_prefix)
    files, names = shard(files, dist_ctx), shard(names, dist_ctx)
    output_dir.mkdir(parents=True, exist_ok=True)
    if merged_dir is not None:
        merged_dir.mkdir(parents=True, exist_ok=True)
    result = InferResult()
    batch_size = 1 if tiled else cfg.infer.batch_size
    for start in range(0, len(files), batch_size):
        chunk, images = [], []
        for path, name in zip(files[start : start + batch_size], names[start : start + batch_size], strict=True):
            targets = [output_dir / name] + ([merged_dir / name] if merged_dir is not None else [])
            if is_done(targets, resume_after):
                result.resumed.append(output_dir / name)
                if on_image is not None:
                    on_image()
                continue
            if resume_after is not None:
                for target in targets:  # this process alone writes these names: a killed pass's leftovers go
                    remove_temp_files(target)
            try:
                images.append(read_image(path, cfg.model.image_channels, cfg.image.color_order,
                                         cfg.image.pixel_limit(tiled)))
                chunk.append(path)
            except DataError as exc:
                result.skipped.append(str(exc))
                if on_image is not None:
                    on_image()
        labels = predict_labels(model, images, cfg, device, tta, tiled) if images else []
        for path, image, lab in zip(chunk, images, labels, strict=True):
            try:
                result.written.append(write_prediction(path, image, lab, cfg, output_dir, merged_dir, name_prefix))
            except OutputError as exc:
                finished = len(result.written) + len(result.resumed)
                raise OutputError(f"{exc} with --resume ({finished} of {len(files)} images are finished)") from None
            if on_image is not None:
                on_image()
    return result
