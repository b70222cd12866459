"""Reading and writing image files (OpenCV), with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flexunet.errors import DataError
from flexunet.files import atomic_write_bytes


def _decode(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise DataError(f"{path}: not a readable image (empty, truncated or not an image file)")
    if array.dtype == np.uint16:
        array = (array / 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {array.dtype}; save it as 8-bit")
    return array


def read_image(path: Path, channels: int = 3, color_order: str = "RGB") -> np.ndarray:
    """An image as uint8 (H, W, channels): RGB by default (OpenCV reads BGR), grey when channels == 1."""
    if channels == 1:
        return _decode(path, cv2.IMREAD_GRAYSCALE)[:, :, None]
    image = _decode(path, cv2.IMREAD_COLOR)
    if channels != 3:
        raise DataError(f"{path}: image_channels = {channels} is not supported (use 1 or 3)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color_order == "RGB" else image


def read_mask(path: Path) -> np.ndarray:
    """A mask as uint8 (H, W) grey or (H, W, 3) RGB; alpha is dropped."""
    mask = _decode(path, cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3 and mask.shape[2] == 4:
        mask = mask[:, :, :3]
    if mask.ndim == 3 and mask.shape[2] == 3:
        return cv2.cvtColor(mask, cv2.COLOR_BGR2RGB)
    if mask.ndim == 3:
        return mask[:, :, 0]
    return mask


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging when shrinking, bilinear when enlarging; the same in training and inference."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width < image.shape[1] and height < image.shape[0]
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest neighbour: any other interpolation invents labels between classes."""
    if labels.shape[1] == width and labels.shape[0] == height:
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def write_image(path: Path, image_rgb: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image; the format follows the extension.

    Atomically (flexunet/files.py): a full disk or a crash leaves the earlier file or none, never a truncated one.
    """
    array = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR) if image_rgb.ndim == 3 and image_rgb.shape[2] == 3 else image_rgb
    ok, encoded = cv2.imencode(path.suffix or ".png", array)
    if not ok:
        raise DataError(f"{path}: cannot encode image")
    atomic_write_bytes(path, encoded.tobytes())
