"""Whole slides: sliding-window inference on tiled TIFF / OME-TIFF / OME-Zarr images too large to load whole.

The slide is read one band of tile rows at a time (tifffile's `aszarr` + zarr read only the stored tiles a band
touches), every band's tiles go through `probs_fn`, and the Gaussian-weighted sum is kept only for the rows the
current band covers: a row is final, divided by the separable weight sum and turned into mask pixels, as soon as
no later band reaches it. Finished rows go to a chunked on-disk zarr array, the pyramid levels are built from it
strip by strip, and the mask is written as a tiled, pyramidal BigTIFF (256×256 tiles, zlib, SubIFDs), tile row by
tile row from generators. Memory therefore grows with the slide's width and the tile size, never with its area
(benchmarks/slides.py measures a 20,000 × 20,000 slide).

tifffile and zarr are the optional extra `flexunet[slides]`.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from flexunet.config.schema import Config
from flexunet.console import say
from flexunet.data.io import ImageTooLarge
from flexunet.errors import DataError, require_extra
from flexunet.files import make_folder, manifest_tags, output_error, produce_file
from flexunet.infer.predict import InferResult, nonfinite_warning
from flexunet.labels import LabelSpace
from flexunet.predict import tile_settings
from flexunet.predict.tiling import Box, gaussian_weights_1d, tile_starts, weight_sums

SLIDE_SUFFIXES = (".tif", ".tiff", ".zarr")  # .ome.tif, .ome.tiff and .ome.zarr end so too
OUTPUT_TILE = 256  # side of the written TIFF tiles and of the on-disk zarr chunks
ProbsFn = Callable[[np.ndarray], np.ndarray]  # (n, t, t, C) uint8 tiles -> (n, K, t, t) float probabilities


def require(module: str) -> ModuleType:
    """Import tifffile/zarr lazily: they are the optional [slides] extra."""
    return require_extra(module, "slides", "whole-slide inference needs the optional extra")


def is_slide(path: Path) -> bool:
    return path.suffix.lower() in SLIDE_SUFFIXES


def list_slides(source: str) -> list[Path]:
    """The slides of a folder (sorted: .tif/.tiff files, .zarr folders), or the one slide `source` names."""
    path = Path(source)
    if is_slide(path) and path.exists():
        return [path]
    if not path.is_dir():
        raise DataError(f"{source}: not a slide (.tif, .tiff, .ome.zarr) nor a folder of slides")
    slides = sorted(p for p in path.iterdir() if is_slide(p) and not p.name.startswith("."))
    if not slides:
        raise DataError(f"{source}: no slides (.tif, .tiff, .ome.zarr) in this folder")
    return slides


@dataclass
class Slide:
    """Level 0 of a slide as a lazily read (H, W, C) array: `region` decodes only the stored tiles it touches."""

    path: Path
    array: Any  # a zarr array (H, W, C) or (C, H, W)
    channels_first: bool
    handle: Any = None  # the open TiffFile, closed by `close`

    @property
    def height(self) -> int:
        return int(self.array.shape[1] if self.channels_first else self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[2] if self.channels_first else self.array.shape[1])

    def region(self, top: int, height: int) -> np.ndarray:
        """Rows top..top+height, all columns, as uint8 (h, W, C)."""
        try:
            data = np.asarray(self.array[:, top : top + height] if self.channels_first
                              else self.array[top : top + height])
        except Exception as exc:  # codecs (JPEG needs imagecodecs), truncated files: one line with the reason
            raise DataError(f"{self.path}: cannot read rows {top}..{top + height} "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if self.channels_first:
            data = np.moveaxis(data, 0, -1)
        if data.ndim == 2:
            data = data[..., None]
        if data.dtype != np.uint8:
            raise DataError(f"{self.path}: {data.dtype} pixels; whole-slide inference reads 8-bit slides")
        return data

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def open_slide(path: Path) -> Slide:
    """Level 0 of a tiled (OME-)TIFF or an OME-Zarr image; anything else is a one-line DataError."""
    zarr = require("zarr")
    if path.suffix.lower() == ".zarr":
        return _open_ome_zarr(path, zarr)
    tifffile = require("tifffile")
    try:
        handle = tifffile.TiffFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable TIFF ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    try:
        series = handle.series[0]
        page = series.levels[0].keyframe
        if not page.is_tiled:
            raise DataError(f"{path}: not a tiled TIFF (stored in strips); whole-slide inference reads tiled "
                            "(pyramidal) TIFFs; for ordinary images use flexunet infer without --slides")
        axes = series.levels[0].axes.upper()
        if axes not in ("YX", "YXS", "SYX", "CYX", "YXC"):
            raise DataError(f"{path}: axes {axes}; whole-slide inference reads one 2-D plane (YX, YXS or CYX)")
        array = zarr.open(series.aszarr(level=0), mode="r")
        return Slide(path, array, axes[0] in "SC", handle)
    except BaseException:
        handle.close()
        raise


def _open_ome_zarr(path: Path, zarr: ModuleType) -> Slide:
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        level = multiscales[0]["datasets"][0]["path"]
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in multiscales[0]["axes"]).upper()
        array = group[level]
    except Exception as exc:
        raise DataError(f"{path}: not an OME-Zarr image ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    squeeze = axes.replace("T", "").replace("Z", "")
    if squeeze not in ("YX", "CYX") or array.shape[: len(axes) - len(squeeze)] not in ((), (1,), (1, 1)):
        raise DataError(f"{path}: axes {axes} of shape {array.shape}; whole-slide inference reads one 2-D plane")
    if len(axes) > len(squeeze):
        array = _Squeezed(array, len(axes) - len(squeeze))
    return Slide(path, array, squeeze == "CYX")


class _Squeezed:
    """An OME-Zarr (T, Z, C, Y, X) array with its leading singleton axes dropped, still read lazily."""

    def __init__(self, array: Any, drop: int) -> None:
        self.array, self.drop = array, drop
        self.shape = tuple(array.shape[drop:])

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        return self.array[(0,) * self.drop + key]


def match_channels(region: np.ndarray, channels: int, color_order: str) -> np.ndarray:
    """(h, W, C) slide pixels as the model reads images: `channels` channels in `color_order` (slides are RGB)."""
    if region.shape[2] == 4:  # RGBA: alpha is not an image channel
        region = region[:, :, :3]
    if channels == 1 and region.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)[..., None]
    if channels == 3 and region.shape[2] == 1:
        region = np.repeat(region, 3, axis=2)
    if region.shape[2] != channels:
        raise DataError(f"{region.shape[2]} channels; the model reads {channels}")
    return region[:, :, ::-1] if channels == 3 and color_order == "BGR" else region


@dataclass(frozen=True)
class SlideResult:
    path: Path  # the written pyramidal TIFF
    height: int
    width: int
    tiles: int
    levels: int


def band_labels(slide: Slide, probs_fn: ProbsFn, space: LabelSpace, tile: int, overlap: int, batch_size: int,
                channels: int, color_order: str) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, mask pixels (rows, W[, 3])) for consecutive row ranges of the slide, top to bottom.

    Keeps only the weighted sum of the current band of tiles, (K, tile, W) floats: rows above the next band's top
    are final once this band is added, so they are normalised, labelled and handed on.
    """
    height, width = slide.height, slide.width
    if height < tile or width < tile:
        raise DataError(f"{slide.path}: {height}x{width} is smaller than one {tile}-px tile; "
                        "use flexunet infer without --slides")
    tops, lefts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    weight_1d = gaussian_weights_1d(tile)
    weight = np.outer(weight_1d, weight_1d)
    rows, cols = grid_weight_sums(height, width, tops, lefts, weight_1d)
    acc: np.ndarray | None = None  # (K, tile, W): rows top .. top + tile
    for i, top in enumerate(tops):
        band = match_channels(slide.region(top, tile), channels, color_order)  # (tile, W, C)
        for start in range(0, len(lefts), batch_size):
            chunk = lefts[start : start + batch_size]
            probs = probs_fn(np.stack([band[:, left : left + tile] for left in chunk]))  # (n, K, tile, tile)
            if acc is None:
                acc = np.zeros((probs.shape[1], tile, width), np.float32)
            for left, p in zip(chunk, probs, strict=True):
                acc[:, :, left : left + tile] += p * weight
        assert acc is not None  # every band has at least one tile
        done = (tops[i + 1] if i + 1 < len(tops) else top + tile) - top  # rows no later band reaches
        final = acc[:, :done] / (rows[top : top + done, None] * cols[None, :])
        yield top, space.mask_pixels(space.labels(final))
        acc = np.concatenate([acc[:, done:], np.zeros((acc.shape[0], done, width), np.float32)], axis=1)


def grid_weight_sums(height: int, width: int, tops: Sequence[int], lefts: Sequence[int],
                     weight_1d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`weight_sums` of the grid tops x lefts from its first column and first row of boxes: the sums depend only
    on the starts, and a slide's full grid has ~10^4 boxes."""
    size = len(weight_1d)
    boxes = [Box(top, lefts[0], size) for top in tops] + [Box(tops[0], left, size) for left in lefts]
    return weight_sums(height, width, boxes, weight_1d)


class LevelStore:
    """Mask pixels (H, W[, 3]) uint8 in a chunked zarr array on disk: rows arrive in order and are written a chunk
    row at a time, so no chunk is read back and rewritten."""

    def __init__(self, zarr: ModuleType, folder: Path, name: str, shape: tuple[int, ...]) -> None:
        group = zarr.open_group(str(folder), mode="a")
        chunks = (OUTPUT_TILE, OUTPUT_TILE) + shape[2:]
        self.array = group.create_array(name, shape=shape, chunks=chunks, dtype="uint8", fill_value=0)
        self.pending: list[np.ndarray] = []
        self.next_row = 0

    def append(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        if sum(len(r) for r in self.pending) >= OUTPUT_TILE:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        data = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        whole = len(data) if final else len(data) // OUTPUT_TILE * OUTPUT_TILE
        self.array[self.next_row : self.next_row + whole] = data[:whole]
        self.next_row += whole
        self.pending = [data[whole:]] if whole < len(data) else []

    def close(self) -> None:
        if self.pending:
            self._flush(final=True)
        if self.next_row != self.array.shape[0]:
            raise RuntimeError(f"{self.next_row} of {self.array.shape[0]} rows written")  # a bug, not a user error


def build_pyramid(zarr: ModuleType, folder: Path, base: Any) -> list[Any]:
    """Level 0 and each half-size level down to one output tile, every level from the one above, a strip of two
    output tiles' rows at a time. Nearest (every second pixel): mask pixels are labels, never averaged."""
    levels = [base]
    while max(levels[-1].shape[:2]) > OUTPUT_TILE:
        above = levels[-1]
        shape = ((above.shape[0] + 1) // 2, (above.shape[1] + 1) // 2) + tuple(above.shape[2:])
        store = LevelStore(zarr, folder, str(len(levels)), shape)
        for y in range(0, above.shape[0], 2 * OUTPUT_TILE):
            store.append(np.asarray(above[y : y + 2 * OUTPUT_TILE])[::2, ::2])
        store.close()
        levels.append(store.array)
    return levels


def level_tiles(level: Any) -> Iterator[np.ndarray]:
    """The level's OUTPUT_TILE tiles in row-major order (edge tiles short; tifffile pads them), one strip read at a
    time."""
    for y in range(0, level.shape[0], OUTPUT_TILE):
        strip = np.asarray(level[y : y + OUTPUT_TILE])
        for x in range(0, level.shape[1], OUTPUT_TILE):
            yield strip[:, x : x + OUTPUT_TILE]


def write_pyramid_tiff(tifffile: ModuleType, path: Path, levels: Sequence[Any]) -> None:
    """A tiled BigTIFF: level 0 with the smaller levels as its SubIFDs (what QuPath, OpenSlide-style viewers and
    tifffile read as a pyramid), each written from a generator of tiles."""
    photometric = "rgb" if len(levels[0].shape) == 3 else "minisblack"
    options = {"tile": (OUTPUT_TILE, OUTPUT_TILE), "compression": "zlib", "photometric": photometric,
               "dtype": np.uint8}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(level_tiles(levels[0]), shape=levels[0].shape, subifds=len(levels) - 1, **options)
        for level in levels[1:]:
            tif.write(level_tiles(level), shape=level.shape, subfiletype=1, **options)


def predict_slide(path: Path, target: Path, probs_fn: ProbsFn, space: LabelSpace, tile: int, overlap: int,
                  batch_size: int, channels: int, color_order: str, max_pixels: int | None = None,
                  tag: str = "") -> SlideResult:
    """Segment the slide at `path` and write its mask to `target` as a pyramidal tiled TIFF, whole or not at all
    (built in hidden files beside it, then renamed). A slide whose header claims more than `max_pixels` is refused
    before any tile is read, as images are: a 300 KB TIFF claiming 100000 x 65535 pixels ran unbounded."""
    tifffile, zarr = require("tifffile"), require("zarr")
    slide = open_slide(path)
    if max_pixels is not None and slide.height * slide.width > max_pixels:
        slide.close()
        raise ImageTooLarge(path, (slide.width, slide.height), max_pixels)
    work = target.with_name(f".{target.name}.levels.zarr")
    try:
        shutil.rmtree(work, ignore_errors=True)
        base: LevelStore | None = None
        for _, pixels in band_labels(slide, probs_fn, space, tile, overlap, batch_size, channels, color_order):
            if base is None:
                base = LevelStore(zarr, work, "0", (slide.height, slide.width) + pixels.shape[2:])
            base.append(pixels)
        assert base is not None  # band_labels yields at least once
        base.close()
        levels = build_pyramid(zarr, work, base.array)
        produce_file(target, lambda tmp: write_pyramid_tiff(tifffile, tmp, levels), tag)
    except OSError as exc:
        raise output_error(target, exc) from None
    finally:
        slide.close()
        shutil.rmtree(work, ignore_errors=True)
    tops, lefts = tile_starts(slide.height, tile, overlap), tile_starts(slide.width, tile, overlap)
    return SlideResult(target, slide.height, slide.width, len(tops) * len(lefts), len(levels))


def read_level(path: Path, level: int = 0) -> np.ndarray:
    """One pyramid level of a written mask, whole (for tests and small slides)."""
    tifffile = require("tifffile")
    with tifffile.TiffFile(path) as handle:
        return handle.series[0].levels[level].asarray()


def slide_stem(path: Path) -> str:
    """`scan` for scan.tif, scan.ome.tif and scan.ome.zarr."""
    stem = path.name[: -len(path.suffix)]
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def slide_done(target: Path, tag: str) -> bool:
    """Resume: a mask made with the same settings (the manifest's `tag`) that opens as a TIFF is kept."""
    if not target.is_file() or manifest_tags(target.parent).get(target.name) != tag:
        return False
    try:
        with require("tifffile").TiffFile(target) as handle:
            return bool(handle.series)
    except Exception:
        return False


def predict_slides(files: Sequence[Path], output_dir: Path, probs_fn: ProbsFn, cfg: Config,
                   resume: bool = False, on_slide: Callable[[], None] | None = None, tag: str = "") -> InferResult:
    """`<output_dir>/<stem>.tif` pyramidal mask per slide, with the [tiledinfer] tile and overlap and [infer]
    batch_size tiles per call of `probs_fn`. An unreadable slide is skipped and reported, as infer does with
    images; with `resume` masks already made with the same settings (`tag`) are kept."""
    tile, overlap = tile_settings(cfg)
    space = LabelSpace.from_config(cfg)
    make_folder(output_dir)
    result = InferResult()
    finite = [True]  # False once a tile of the current slide got NaN or inf from the model

    def checked_probs(tiles: np.ndarray) -> np.ndarray:
        probs = probs_fn(tiles)
        finite[0] = finite[0] and bool(np.isfinite(probs).all())
        return probs

    for path in files:
        target = output_dir / f"{slide_stem(path)}.tif"
        if resume and slide_done(target, tag):
            result.resumed.append(target)
        else:
            finite[0] = True
            try:
                predict_slide(path, target, checked_probs, space, tile, overlap, cfg.infer.batch_size,
                              cfg.model.image_channels, cfg.image.color_order, cfg.image.pixel_limit(tiled=True),
                              tag)
                result.written.append(target)
                if not finite[0]:
                    result.nonfinite.append(path)
            except DataError as exc:
                result.skipped.append(str(exc))
        if on_slide is not None:
            on_slide()
    if result.nonfinite:
        say(nonfinite_warning(result.nonfinite))
    return result
