"""Find image files and pair each image with its mask by file stem (never by list position)."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from flexunet.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_WILDCARDS = set("*?[")


@dataclass(frozen=True)
class Pair:
    """One training example: an image file and its mask file."""

    image: Path
    mask: Path

    @property
    def stem(self) -> str:
        return self.image.stem


def _has_wildcard(text: str) -> bool:
    return any(c in _WILDCARDS for c in text)


def expand_dirs(pattern: str) -> list[tuple[tuple[str, ...], Path]]:
    """Folders matching `pattern` (which may hold glob wildcards, e.g. `train/*/images/`), sorted.

    Each folder comes with the path parts its wildcards matched, so `train/A/images` pairs with `train/A/masks`.
    """
    pattern = pattern.rstrip("/\\") or "/"
    if not _has_wildcard(pattern):
        return [((), Path(pattern))] if os.path.isdir(pattern) else []
    parts = Path(pattern).parts
    wild = [i for i, part in enumerate(parts) if _has_wildcard(part)]
    found = []
    for match in sorted(glob.glob(pattern)):
        path = Path(match)
        if path.is_dir() and len(path.parts) == len(parts):
            found.append((tuple(path.parts[i] for i in wild), path))
    return found


def list_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in `folder`, any letter case of the extension, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def list_image_files(pattern: str, what: str = "images_dir") -> list[Path]:
    """All images a folder, an image file, or a glob of files or folders names (`slides/*.tif`, `scans/*/images`),
    in sorted order; a clear error when there is none."""
    pattern = pattern.rstrip("/\\") or "/"
    matches = [Path(m) for m in sorted(glob.glob(pattern))] if _has_wildcard(pattern) else [Path(pattern)]
    if not any(m.exists() for m in matches):
        raise DataError(f"{what} {pattern}: no such folder or file")
    files = []
    for match in matches:
        if match.is_dir():
            files += list_images(match)
        elif match.is_file() and match.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(match)
    if not files:
        raise DataError(f"{what} {pattern}: no image files ({', '.join(IMAGE_EXTENSIONS)}, any case)")
    return files


@dataclass(frozen=True)
class PairMatch:
    """Every file found: pairs matched by stem, files without a partner, and stems found twice (one line each)."""

    pairs: tuple[Pair, ...]
    images_without_mask: tuple[Path, ...]
    masks_without_image: tuple[tuple[str, Path], ...]  # (stem without mask_suffix, mask file)
    duplicates: tuple[str, ...]


def match_pairs(image_dirs: list[tuple[tuple[str, ...], Path]], mask_dirs: list[tuple[tuple[str, ...], Path]],
                mask_suffix: str = "", mask_extension: str | None = None) -> PairMatch:
    """Pair the images of `expand_dirs` folders with the masks of the same stem, keeping every file without a partner.

    `pair_files` (training) stops at the first problem; `doctor` and `stats` list them all.
    """
    # Folders pair by what their wildcards matched; without matching wildcards, every folder is one pool.
    same_shape = bool(image_dirs and mask_dirs) and len(image_dirs[0][0]) == len(mask_dirs[0][0])
    mask_exts = (mask_extension.lower(),) if mask_extension else IMAGE_EXTENSIONS
    masks: dict[tuple[tuple[str, ...], str], Path] = {}
    duplicates = []
    for key, folder in mask_dirs:
        for path in list_images(folder, mask_exts):
            stem = path.stem.removesuffix(mask_suffix) if mask_suffix else path.stem
            slot = (key if same_shape else (), stem)
            if slot in masks:
                duplicates.append(f"{path}: two masks for stem '{stem}' ({masks[slot].name} and {path.name})")
                continue
            masks[slot] = path
    pairs, lonely = [], []
    used: set[tuple[tuple[str, ...], str]] = set()
    for key, folder in image_dirs:
        for path in list_images(folder):
            slot = (key if same_shape else (), path.stem)
            if slot in used:
                duplicates.append(f"{path}: two images with stem '{path.stem}'")
            elif slot not in masks:
                lonely.append(path)
            else:
                used.add(slot)
                pairs.append(Pair(path, masks[slot]))
    unused = tuple((slot[1], m) for slot, m in masks.items() if slot not in used)
    return PairMatch(tuple(pairs), tuple(lonely), unused, tuple(duplicates))


def pair_files(
    images_dir: str, masks_dir: str, mask_suffix: str = "", mask_extension: str | None = None
) -> list[Pair]:
    """Pair every image with the mask of the same stem (`<stem><mask_suffix>.<ext>`), sorted by image path.

    Raises DataError naming the first unpaired file when an image has no mask or a mask has no image.
    """
    image_dirs = expand_dirs(images_dir)
    mask_dirs = expand_dirs(masks_dir)
    if not image_dirs:
        raise DataError(f"images_dir {images_dir}: no such folder")
    if not mask_dirs:
        raise DataError(f"masks_dir {masks_dir}: no such folder")
    found = match_pairs(image_dirs, mask_dirs, mask_suffix, mask_extension)
    if found.duplicates:
        raise DataError(found.duplicates[0])
    unpaired = [f"{path}: no mask with stem '{path.stem}{mask_suffix}' in {masks_dir}"
                for path in found.images_without_mask]
    unpaired += [f"{m}: no image with stem '{stem}' in {images_dir}" for stem, m in found.masks_without_image]
    if unpaired:
        more = f" (and {len(unpaired) - 1} more unpaired files)" if len(unpaired) > 1 else ""
        raise DataError(unpaired[0] + more)
    if not found.pairs:
        raise DataError(f"images_dir {images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}, any case)")
    return list(found.pairs)
