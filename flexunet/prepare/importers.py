"""Importers: turn a public dataset's own layout into `<out>/all/{images,masks}`, a split list and a starter config.

Every importer writes lossless PNG masks (the seed wrote JPEG masks, which invent colours at every edge) and
splits by source *after* import, never augmenting before (the seed's augmented copies leaked across splits).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flexunet.data.io import read_image, read_mask, write_image
from flexunet.data.masks import RGB, MaskDecoding, decode_mask
from flexunet.data.pairing import list_images
from flexunet.errors import DataError
from flexunet.files import Protected, atomic_write_text, check_outputs, guarded
from flexunet.prepare.split import split_dataset

CONFIG_NAME = "train_eval_infer.config"


@dataclass(frozen=True)
class ImportResult:
    """What an importer wrote: pairs, images kept without mask, files it skipped and why, and the config."""

    out_dir: Path
    pairs: int
    unlabelled: int  # images written to <out>/unlabelled/images because they have no mask
    skipped: tuple[str, ...]  # one line per skipped file: "<path>: <reason>"
    config: Path | None
    rgb_map: dict[RGB, int] | None  # None: binary masks


def _fit_size(image: np.ndarray, max_side: int | None, nearest: bool) -> np.ndarray:
    """Shrink so the longer side is at most `max_side` (masks with nearest: other modes invent colours)."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_AREA)


@contextmanager
def importing(raw_dir: Path, out_dir: Path) -> Iterator[None]:
    """Around an import: refuse, before anything is written, an `out_dir` that already holds a config or a split
    list flexunet may not replace; while the import runs, nothing under `raw_dir` is written."""
    config, split_list = Path(out_dir) / CONFIG_NAME, Path(out_dir) / "split.csv"
    if config.exists():
        raise DataError(f"{config}: already exists; import into an empty folder")
    with guarded([Protected(Path(raw_dir), "the dataset being imported")]):
        check_outputs([split_list, config])
        yield


def write_pair(out_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray | None,
               max_side: int | None = None) -> None:
    """`<out>/all/{images,masks}/<stem>.png`, or `<out>/unlabelled/images/<stem>.png` when there is no mask."""
    if mask is None:
        write_image(out_dir / "unlabelled" / "images" / f"{stem}.png", _fit_size(image, max_side, False))
        return
    if mask.shape[:2] != image.shape[:2]:
        raise DataError(f"{stem}: mask is {mask.shape[1]}x{mask.shape[0]} "
                        f"but the image is {image.shape[1]}x{image.shape[0]}")
    write_image(out_dir / "all" / "images" / f"{stem}.png", _fit_size(image, max_side, False))
    write_image(out_dir / "all" / "masks" / f"{stem}.png", _fit_size(mask, max_side, True))


def model_size(width: int, height: int) -> tuple[int, int]:
    """A network input size near the data's: at most 512, a multiple of 32 (five poolings), at least 64."""
    w, h = (max(64, min(512, side) // 32 * 32) for side in (width, height))
    return w, h


def starter_config(image_size: tuple[int, int], rgb_map: Mapping[RGB, int] | None, split_file: str | None) -> str:
    """Seed-format INI text for a first training run on an imported dataset (paths relative to the config)."""
    width, height = model_size(*image_size)
    num_classes = 1 if rgb_map is None else max(rgb_map.values()) + 1
    lines = ["; written by flexunet prepare: a starting point, edit freely", "", "[model]",
             'model = "TensorFlowFlexUNet"', f"image_width = {width}", f"image_height = {height}", "image_channels = 3",
             f"num_classes = {num_classes}", "base_filters = 16", "num_layers = 6", "dropout_rate = 0.05",
             "learning_rate = 0.0001", "", "[train]", "epochs = 100", "batch_size = 4", "patience = 10",
             'model_dir = "./models"', 'eval_dir = "./eval"']
    sections = ("train", "valid", "test") if split_file else ("train",)
    for i, name in enumerate(sections):
        if i:
            lines += ["", f"[{name}]"]
        lines += ['images_dir = "./all/images"', 'masks_dir = "./all/masks"']
        if split_file:
            lines.append(f'split_file = "./{split_file}"')
    lines += ["", "[mask]"]
    if rgb_map is None:
        lines.append("threshold = 127")
    else:
        lines.append(f"rgb_map = {dict(rgb_map)!r}")
    lines += ["", "[infer]", 'images_dir = "./unlabelled/images"', 'output_dir = "./infer_output"', ""]
    return "\n".join(lines)


def finish_import(out_dir: Path, written: int, unlabelled: int, skipped: list[str], rgb_map: Mapping[RGB, int] | None,
                  image_size: tuple[int, int], ratios: tuple[float, ...] | None, group_by: str | None,
                  seed: int) -> ImportResult:
    """Split by source (when asked and there are pairs) and write the starter config next to the data."""
    if written == 0 and unlabelled == 0:
        first = skipped[0] if skipped else "none found"
        raise DataError(f"{out_dir}: nothing imported ({len(skipped)} files skipped; first: {first})")
    split_name = None
    if ratios and written >= 3:
        result = split_dataset(out_dir / "all" / "images", out_dir / "all" / "masks", out_dir, ratios, group_by, seed)
        split_name = result.split_file.name
    config = None
    if written:
        config = out_dir / CONFIG_NAME
        atomic_write_text(config, starter_config(image_size, rgb_map, split_name))
    return ImportResult(out_dir, written, unlabelled, tuple(skipped), config, dict(rgb_map) if rgb_map else None)


def _binary(mask: np.ndarray, source: Path) -> np.ndarray:
    """Foreground 255 where training reads foreground: labels of a 0/1 mask, else brightest channel > 127."""
    return decode_mask(mask, MaskDecoding(num_classes=1), str(source))[0] * np.uint8(255)


def import_pairs(images: list[Path], find_mask: Callable[[Path], Path | None], out_dir: Path,
                 colour_of: Callable[[Path], RGB] | None = None, max_side: int | None = None,
                 keep_unlabelled: bool = False) -> tuple[int, int, list[str], tuple[int, int]]:
    """Copy images and their masks as PNG; a mask becomes binary 0/255, or `colour_of(image)` on black.

    Returns (pairs written, unlabelled images written, skipped lines, size of the last image written).
    """
    written = unlabelled = 0
    skipped: list[str] = []
    size = (512, 512)
    for path in images:
        mask_path = find_mask(path)
        if mask_path is None and not keep_unlabelled:
            skipped.append(f"{path}: no mask found")
            continue
        try:
            image = read_image(path)
            mask = None if mask_path is None else _binary(read_mask(mask_path), mask_path)
            if mask is not None and colour_of is not None:
                mask = np.where(mask[..., None] > 0, np.array(colour_of(path), np.uint8), np.uint8(0))
            write_pair(out_dir, path.stem, image, mask, max_side)
        except DataError as exc:
            skipped.append(str(exc))
            continue
        if mask_path is None:
            skipped.append(f"{path}: no mask found; written to unlabelled/")
            unlabelled += 1
        else:
            written += 1
        size = _fit_size(image, max_side, False).shape[1::-1]
    return written, unlabelled, skipped, size


def _mask_finder(masks_dir: Path, suffix: str, strip: str = "") -> Callable[[Path], Path | None]:
    """Look a mask up by `<image stem minus strip><suffix>` with any image extension and letter case."""
    index = {p.stem.lower(): p for p in list_images(masks_dir)} if masks_dir.is_dir() else {}

    def find(image: Path) -> Path | None:
        stem = image.stem[: -len(strip)] if strip and image.stem.endswith(strip) else image.stem
        found = index.get(f"{stem}{suffix}".lower())
        return found if found is not None and found != image else None

    return find


def import_generic(images_dir: Path, masks_dir: Path, out_dir: Path, mask_suffix: str = "",
                   max_side: int | None = None, ratios: tuple[float, ...] | None = (0.8, 0.1, 0.1),
                   group_by: str | None = None, seed: int = 137, keep_unlabelled: bool = False) -> ImportResult:
    """Any `images/` + `masks/` folders paired by stem (+ mask_suffix); colour masks keep their colours."""
    from flexunet.prepare.stats import infer_rgb_map

    images_dir, masks_dir, out_dir = Path(images_dir), Path(masks_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: no such images folder")
    find = _mask_finder(masks_dir, mask_suffix)
    images = [p for p in list_images(images_dir) if not (mask_suffix and p.stem.endswith(mask_suffix))]
    masks = [read_mask(m) for m in (find(p) for p in images[:32]) if m is not None]
    rgb_map = infer_rgb_map(masks)
    if rgb_map is None:
        written, unlabelled, skipped, size = import_pairs(images, find, out_dir, None, max_side, keep_unlabelled)
    else:  # copy colour masks as they are: their colours are the classes
        written = unlabelled = 0
        skipped, size = [], (512, 512)
        for path in images:
            mask_path = find(path)
            if mask_path is None:
                skipped.append(f"{path}: no mask with stem '{path.stem}{mask_suffix}' in {masks_dir}")
                continue
            image = read_image(path)
            write_pair(out_dir, path.stem, image, read_mask(mask_path), max_side)
            written += 1
            size = _fit_size(image, max_side, False).shape[1::-1]
    return finish_import(out_dir, written, unlabelled, skipped, rgb_map, size, ratios, group_by, seed)


def import_isic(raw_dir: Path, out_dir: Path, max_side: int | None = 1024, **options: Any) -> ImportResult:
    """ISIC 2017 Task 1: `ISIC_*.jpg` with `ISIC_*_segmentation.png` (in the same or a sibling masks folder)."""
    raw_dir = Path(raw_dir)
    images_dir = raw_dir / "images" if (raw_dir / "images").is_dir() else raw_dir
    masks_dir = next((d for d in (raw_dir / "masks", raw_dir / "ground_truth", raw_dir) if d.is_dir()
                      and any(p.stem.endswith("_segmentation") for p in list_images(d))), raw_dir)
    return import_generic(images_dir, masks_dir, out_dir, "_segmentation", max_side, **options)


# UCSB breast-cancer cells: colours of the seed's mini_test (benign green, malignant red).
UCSB_COLOURS: dict[str, RGB] = {"benign": (0, 255, 0), "malignant": (255, 0, 0)}


def import_ucsb(raw_dir: Path, out_dir: Path, max_side: int | None = None,
                ratios: tuple[float, ...] | None = (0.8, 0.1, 0.1), seed: int = 137) -> ImportResult:
    """UCSB bio-segmentation breast-cancer cells: `<name>_ccd.tif` images, `<name>.TIF` masks, class in the name."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    files = [p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff")]
    images = sorted(p for p in files if p.stem.lower().endswith("_ccd"))
    masks = {p.stem.lower(): p for p in files if not p.stem.lower().endswith("_ccd")}
    if not images:
        raise DataError(f"{raw_dir}: no '*_ccd.tif' images (UCSB breast-cancer layout)")

    def find(image: Path) -> Path | None:
        return masks.get(image.stem.lower().removesuffix("_ccd"))

    def colour_of(image: Path) -> RGB:
        name = image.stem.lower()
        return UCSB_COLOURS["malignant" if "malignant" in name else "benign"]

    written, unlabelled, skipped, size = import_pairs(images, find, out_dir, colour_of, max_side)
    rgb_map = {(0, 0, 0): 0, UCSB_COLOURS["benign"]: 1, UCSB_COLOURS["malignant"]: 2}
    return finish_import(out_dir, written, unlabelled, skipped, rgb_map, size, ratios, None, seed)


# SIPaKMeD cell classes and the colours given to their nuclei (the seed's cervical mini_test used three of them).
SIPAKMED_COLOURS: dict[str, RGB] = {
    "dyskeratotic": (255, 0, 0), "koilocytotic": (0, 0, 255), "metaplastic": (0, 255, 0),
    "parabasal": (0, 128, 255), "superficial-intermediate": (255, 255, 0),
}


def _read_polygon(path: Path) -> np.ndarray:
    """SIPaKMeD `.dat` boundary: one `x,y` pair per line (floats)."""
    try:
        points = [tuple(float(v) for v in re.split(r"[,\s]+", line.strip())[:2])
                  for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a list of x,y boundary points ({exc})") from None
    return np.round(np.array(points)).astype(np.int32)


def import_sipakmed(raw_dir: Path, out_dir: Path, max_side: int | None = 512,
                    ratios: tuple[float, ...] | None = (0.8, 0.1, 0.1), seed: int = 137) -> ImportResult:
    """SIPaKMeD full slides by class: `<raw>/[im_]<Class>/<id>.bmp` with `<id>_nuc_<k>.dat` nucleus boundaries.

    Every nucleus is filled with its class colour (SIPAKMED_COLOURS); slides without any `.dat` are skipped.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    written, skipped, size = 0, [], (512, 512)
    class_dirs = sorted(d for d in raw_dir.iterdir() if d.is_dir()) if raw_dir.is_dir() else []
    used: dict[RGB, int] = {(0, 0, 0): 0}
    for folder in class_dirs:
        name = folder.name.lower().removeprefix("im_")
        if name not in SIPAKMED_COLOURS:
            skipped.append(f"{folder}: not a SIPaKMeD class ({', '.join(SIPAKMED_COLOURS)})")
            continue
        colour = SIPAKMED_COLOURS[name]
        for path in list_images(folder):
            outlines = sorted(folder.glob(f"{path.stem}_nuc*.dat"))
            if not outlines:
                skipped.append(f"{path}: no {path.stem}_nuc*.dat nucleus boundary")
                continue
            image = read_image(path)
            mask = np.zeros_like(image)
            cv2.fillPoly(mask, [_read_polygon(p) for p in outlines], colour)
            write_pair(out_dir, f"{name}_{path.stem}", image, mask, max_side)
            used.setdefault(colour, len(used))
            written += 1
            size = _fit_size(image, max_side, False).shape[1::-1]
    if not class_dirs:
        raise DataError(f"{raw_dir}: no class folders (expected <raw>/im_<Class>/<id>.bmp)")
    return finish_import(out_dir, written, 0, skipped, used, size, ratios, None, seed)
