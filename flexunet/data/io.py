"""Reading and writing image files (OpenCV; Pillow reads only headers), with errors that name the file.

Reading rules (one for images and masks alike):
- The size in the file header is checked before anything is decoded: a file over the pixel limit ([image]
  max_pixels) raises `ImageTooLarge`, so a decompression bomb (a 74-byte PNG claiming 100000x100000) costs nothing.
- EXIF orientation is applied to images and masks alike (OpenCV does it for JPEG), so a pair stays aligned.
- 16-bit files keep their values: masks as they are (label 2 stays 2), images scaled to uint8 by `to_uint8`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from flexunet.config.section import DEFAULT_MAX_PIXELS
from flexunet.errors import DataError
from flexunet.files import atomic_write_bytes

Image.MAX_IMAGE_PIXELS = None  # Pillow only reads headers here; `check_size` applies flexunet's own limit

_SENSOR_MAXIMA = (255, 1023, 4095, 16383, 65535)  # 8-, 10-, 12-, 14- and 16-bit sensors
# The largest file an image of N pixels can be: N * 24 bytes (16-bit RGBA as ASCII PPM, the most verbose pixels
# OpenCV reads; uncompressed float RGBA is 16) plus metadata (EXIF, ICC profiles, thumbnails).
MAX_BYTES_PER_PIXEL = 24
FILE_SLACK_BYTES = 16 * 2**20


class ImageTooLarge(DataError):
    """A file whose header claims more pixels than the limit: skipped, never decoded."""

    def __init__(self, path: Path, size: tuple[int, int], max_pixels: int) -> None:
        self.path, self.size = path, size
        super().__init__(f"{path}: {size[0]}x{size[1]} pixels is over the limit of {max_pixels:,} "
                         f"([image] max_pixels); skipped without decoding")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding; None when Pillow cannot parse the format."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse is left to OpenCV, which reports it
        return None


def check_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """Raise `ImageTooLarge` when the header of `path` claims more than `max_pixels` pixels; the header's
    (width, height), or None when Pillow cannot parse it."""
    size = image_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLarge(path, size, max_pixels)
    return size


READABLE_PIXEL_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.bool_))


def unsupported_pixel_type(path: Path, dtype: np.dtype) -> DataError:
    return DataError(f"{path}: unsupported pixel type {dtype}; save it as 8- or 16-bit integers (an instance mask "
                     "holds at most 65,535 objects)")


def check_pixel_type(path: Path) -> None:
    """Raise `DataError` when a TIFF header declares pixels other than 8- or 16-bit integers (32-bit ids of an
    instance mask, floats), which the read would refuse after the whole file: found when the pairs are listed,
    before a run writes anything. PNG, JPEG and BMP hold at most 16 bits by their format."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            dtype = np.dtype(tif.pages[0].dtype)
    except Exception:  # noqa: BLE001 - a header tifffile cannot parse is reported by the read, with its reason
        return
    if dtype not in READABLE_PIXEL_TYPES:
        raise unsupported_pixel_type(path, dtype)


def check_length(path: Path, size: tuple[int, int] | None, max_pixels: int) -> None:
    """Raise `DataError` when the file is larger than any image of its header's size (or of `max_pixels` pixels)
    can be: files are read whole before decoding, and a 50 GB sparse "PNG" was read into memory."""
    pixels = size[0] * size[1] if size is not None else max_pixels
    most = pixels * MAX_BYTES_PER_PIXEL + FILE_SLACK_BYTES
    try:
        length = path.stat().st_size
    except OSError:
        return  # reported by the read that follows, with its reason
    if length > most:
        shown = f"a {size[0]}x{size[1]} image" if size is not None else "an image within [image] max_pixels"
        raise DataError(f"{path}: {length:,} bytes, more than {shown} can take ({most:,}); not read")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A 16-bit image as uint8, divided by the smallest sensor range (8, 10, 12, 14 or 16 bits) that holds its maximum.

    One camera gives one scale for all its images, and 8-bit data stored in 16 bits (a nuclei image with values
    0..235) keeps its values; dividing by 65535 would make it black.
    """
    if image.dtype == np.uint8:
        return image
    top = next(m for m in _SENSOR_MAXIMA if m >= int(image.max(initial=0)))
    return np.round(image.astype(np.float32) * (255.0 / top)).astype(np.uint8)


def _decode(path: Path, flags: int, max_pixels: int) -> np.ndarray:
    check_length(path, check_size(path, max_pixels), max_pixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        array = cv2.imdecode(data, flags) if data.size else None
    except cv2.error:  # e.g. a header over OpenCV's own pixel limit in a format Pillow cannot read
        array = None
    if array is None:
        raise DataError(f"{path}: not a readable image (empty, truncated or not an image file)")
    if array.dtype not in (np.uint8, np.uint16):
        raise unsupported_pixel_type(path, array.dtype)
    return array


def read_image(path: Path, channels: int = 3, color_order: str = "RGB",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image as uint8 (H, W, channels): RGB by default (OpenCV reads BGR), grey when channels == 1."""
    if channels == 1:
        return to_uint8(_decode(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH, max_pixels))[:, :, None]
    if channels != 3:
        raise DataError(f"{path}: image_channels = {channels} is not supported (use 1 or 3)")
    image = to_uint8(_decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_pixels))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color_order == "RGB" else image


def read_mask(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask (H, W) grey or (H, W, 3) RGB, uint8 or uint16 as stored (16-bit index masks keep their labels).

    ANYCOLOR keeps grey masks single-channel and, unlike IMREAD_UNCHANGED, applies EXIF orientation as images get.
    """
    mask = _decode(path, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH, max_pixels)
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
    """Exact nearest neighbour: other interpolations invent labels between classes, and OpenCV's plain
    INTER_NEAREST samples pixel corners, shifting labels by (s-1)/2 px against the image after an s-times shrink."""
    if labels.shape[1] == width and labels.shape[0] == height:
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def write_image(path: Path, image_rgb: np.ndarray, tag: str = "") -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image; the format follows the extension.

    Atomically (flexunet/files.py): a full disk or a crash leaves the earlier file or none, never a truncated one.
    """
    array = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR) if image_rgb.ndim == 3 and image_rgb.shape[2] == 3 else image_rgb
    ok, encoded = cv2.imencode(path.suffix or ".png", array)
    if not ok:
        raise DataError(f"{path}: cannot encode image")
    atomic_write_bytes(path, encoded.tobytes(), tag)
