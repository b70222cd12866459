"""A dataset's fingerprint for `flexunet init`: where images and masks are, how masks encode classes, image sizes,
object sizes, and which files are copies of one source.

Every finding that `init` turns into a config value carries its reason, so the user reads one line per decision.
Problems that make training impossible (nothing to pair, photos where masks should be, sizes too mixed to share one
input size) raise one-line DataErrors naming the folder or file.
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexunet.data.io import image_size, read_image, read_mask
from flexunet.data.masks import RGB, MaskDecoding, decode_mask, holds_instance_ids, is_grey
from flexunet.data.pairing import Pair, list_images, match_pairs
from flexunet.errors import DataError
from flexunet.prepare.layout import SPLIT_ORDER, SplitDirs, find_splits
from flexunet.prepare.split import merge_near_copies, source_id

MAX_CLASSES = 32  # more mask colours than this and the "masks" are photos
MAX_SIZE_RATIO = 8  # images whose sides differ more than this cannot share one input size
MASK_SAMPLE = 64  # masks read to learn their kind, colours and object sizes
SUFFIXES = ("_segmentation", "_Segmentation", "_mask", "_Mask", "-mask", "_masks", "_label", "_labels", "_gt", "_GT",
            "_anno", "_annotation")


@dataclass(frozen=True)
class Objects:
    """Equivalent diameters (original pixels) of the connected objects of one class over the sampled masks."""

    count: int
    median: float
    small: float  # 10th percentile


@dataclass(frozen=True)
class Survey:
    """What `init` learned about a dataset folder."""

    root: Path
    dirs: tuple[SplitDirs, ...]  # the folders found (<split>/images, or images/ itself)
    pairs: tuple[Pair, ...]
    given_split: dict[str, str]  # image path -> train/valid/test when the folders are named so, else empty
    mask_suffix: str
    sizes: Counter[tuple[int, int]]  # (width, height) of the images
    channels: int  # 1 when every sampled image is a one-channel file, else 3
    mask_kind: str  # "binary", "index", "palette" or "instances"
    rgb_map: dict[RGB, int] | None  # palette masks: colour -> class, black first
    num_classes: int  # as [model] num_classes: 1 for binary
    class_names: list[str]
    class_fractions: tuple[float, ...]  # share of sampled mask pixels per label, background first
    objects: dict[int, Objects]  # label -> object sizes (labels with no object left out)
    reasons: list[str] = field(default_factory=list)  # one line per finding, in order

    @property
    def decoding(self) -> MaskDecoding:
        """How training will read these masks (the config init writes says the same)."""
        return mask_decoding_for(self.mask_kind, self.rgb_map, self.num_classes)

    @property
    def typical_size(self) -> tuple[int, int]:
        """The median image's (width, height)."""
        ordered = sorted(self.sizes.elements(), key=lambda s: s[0] * s[1])
        return ordered[len(ordered) // 2]


def _pattern(dirs: Sequence[SplitDirs], part: str) -> str:
    """One folder, or the `<root>/*/<part>` pattern over several sub-folders."""
    if len(dirs) == 1:
        return getattr(dirs[0], part)
    return str(Path(getattr(dirs[0], part)).parent.parent / "*" / part)


def image_and_mask_patterns(survey: Survey) -> tuple[str, str]:
    return _pattern(survey.dirs, "images"), _pattern(survey.dirs, "masks")


def _guess_suffix(images: list[Path], masks: list[Path]) -> str:
    """The suffix that turns image stems into mask stems (ISIC's `_segmentation`), or '' when stems already match."""
    stems = {p.stem for p in images}
    if not masks or sum(m.stem in stems for m in masks) * 2 >= len(masks):
        return ""
    found: Counter[str] = Counter()
    for mask in masks[:200]:
        for cut in range(len(mask.stem) - 1, 0, -1):
            if mask.stem[:cut] in stems:
                found[mask.stem[cut:]] += 1
                break
    if not found:
        return ""
    suffix, count = found.most_common(1)[0]
    return suffix if count * 2 >= min(len(masks), 200) or suffix in SUFFIXES else ""


def _colour_coverage(mask: np.ndarray) -> tuple[int, float]:
    """Distinct colours of an RGB mask and the share of pixels its MAX_CLASSES most frequent colours cover."""
    packed = (mask[..., 0].astype(np.int64) << 32) | (mask[..., 1].astype(np.int64) << 16) | mask[..., 2]
    _, counts = np.unique(packed, return_counts=True)
    counts = np.sort(counts)[::-1]
    return len(counts), float(counts[:MAX_CLASSES].sum() / counts.sum())


def _one_object_per_value(masks: list[np.ndarray]) -> bool:
    """Whether each non-zero value of these single-channel masks is one connected object (instance labels)."""
    from scipy import ndimage

    singles = total = 0
    for mask in masks[:8]:
        values = [v for v in np.unique(mask) if v != 0][:64]
        for v in values:
            total += 1
            singles += ndimage.label(mask == v)[1] == 1
    return total >= 8 and singles >= 0.8 * total


def mask_kind(masks: list[tuple[Path, np.ndarray]]) -> tuple[str, dict[RGB, int] | None, int, str]:
    """(kind, rgb_map, num_classes, reason) from a sample of masks as read by `read_mask`."""
    from flexunet.prepare.stats import infer_rgb_map

    colour = [(p, m) for p, m in masks if not is_grey(m)]
    if colour:
        for path, mask in colour:
            distinct, covered = _colour_coverage(mask)
            if covered < 0.9:
                raise DataError(f"{path}: {distinct:,} colours, the {MAX_CLASSES} most frequent cover only "
                                f"{covered:.0%} of it: these look like photos, not masks")
        rgb_map = infer_rgb_map([m for _, m in colour]) or {}
        if len(rgb_map) > MAX_CLASSES:
            raise DataError(f"{colour[0][0].parent}: {len(rgb_map)} mask colours each cover 1% of a mask: these look "
                            "like photos, not masks")
        return ("palette", rgb_map, max(len(rgb_map), 2),
                f"masks are an RGB palette with {len(rgb_map)} colours -> num_classes {max(len(rgb_map), 2)}")
    grey = [(p, m if m.ndim == 2 else m[..., 0]) for p, m in masks]
    top = max(int(m.max(initial=0)) for _, m in grey)
    lossy = any(p.suffix.lower() in (".jpg", ".jpeg") for p, _ in grey)
    values = set().union(*(np.unique(m).tolist() for _, m in grey))
    if any(holds_instance_ids(m) for _, m in grey):
        return "instances", None, 1, f"masks are 16-bit with values up to {top}: instance labels, one id per object " \
                                     "-> [mask] kind instances, trained as foreground vs background"
    if top <= 1:
        return "binary", None, 1, "masks hold 0 and 1 -> binary (num_classes 1)"
    if not lossy and len(values) <= MAX_CLASSES and top < MAX_CLASSES:
        if len(values) >= 9 and _one_object_per_value([m for _, m in grey]):
            return ("instances", None, 1, f"masks hold {len(values) - 1} ids, each one connected object: instance "
                    "labels -> [mask] kind instances, trained as foreground vs background")
        return ("index", None, top + 1,
                f"masks hold class indices 0..{top} -> num_classes {top + 1}")
    middle = sum(int(((m > 32) & (m < 223)).sum()) for _, m in grey) / sum(m.size for _, m in grey)
    if middle > 0.1 and len(values) > MAX_CLASSES:
        if lossy or max(m.dtype.itemsize for _, m in grey) == 1:
            raise DataError(f"{grey[0][0].parent}: {len(values)} grey levels, {middle:.0%} of pixels neither dark nor "
                            "bright: these look like photos, not masks")
    return "binary", None, 1, "masks are grey (black background, bright foreground) -> binary (num_classes 1)"


def object_sizes(labels: list[np.ndarray], num_labels: int) -> dict[int, Objects]:
    """Connected objects (8-connected) per label > 0 over the sampled label maps."""
    from scipy import ndimage

    found: dict[int, list[float]] = {}
    for lab in labels:
        for c in range(1, num_labels):
            components, n = ndimage.label(lab == c, structure=np.ones((3, 3)))
            if n:
                areas = np.bincount(components.ravel())[1:]
                found.setdefault(c, []).extend((2 * np.sqrt(areas / np.pi)).tolist())
    return {c: Objects(len(d), statistics.median(d), float(np.percentile(d, 10))) for c, d in found.items()}


def mask_decoding_for(kind: str, rgb_map: dict[RGB, int] | None, num_classes: int) -> MaskDecoding:
    if kind == "palette":
        return MaskDecoding(num_classes=num_classes, rgb_map=rgb_map)
    return MaskDecoding(num_classes=num_classes, instances=kind == "instances")


def _sample(items: Sequence[Pair], limit: int) -> list[Pair]:
    if len(items) <= limit:
        return list(items)
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def survey(root: Path) -> Survey:
    """Fingerprint the dataset under `root`: `images/` + `masks/`, or `<split>/images` + `<split>/masks` (split
    folders named train/valid/test keep their split; other sub-folders, e.g. one per class, are pooled)."""
    root = Path(root)
    dirs = find_splits(root)
    reasons: list[str] = []
    named = [d for d in dirs if d.name in SPLIT_ORDER]
    if len(dirs) > 1 and any(d.name == "all" for d in dirs):
        dirs = [d for d in dirs if d.name == "all"]  # images/ at the top wins over sub-folders
    images = [p for d in dirs for p in list_images(Path(d.images))] if dirs else []
    if not images:
        raise DataError(f"{root}: no images in {', '.join(d.images for d in dirs)}")
    masks = [p for d in dirs if Path(d.masks).is_dir() for p in list_images(Path(d.masks))]
    if not masks:
        raise DataError(f"{root}: {len(images)} images but no masks (expected a masks/ folder beside images/ with "
                        "one mask per image, same file name)")
    suffix = _guess_suffix(images, masks)
    if suffix:
        reasons.append(f"mask_suffix {suffix!r}: masks are named <image name>{suffix}")
    pairs: list[Pair] = []
    lonely: list[Path] = []
    unused: list[Path] = []
    for d in dirs:
        found = match_pairs([((), Path(d.images))], [((), Path(d.masks))] if Path(d.masks).is_dir() else [], suffix)
        if found.duplicates:
            raise DataError(found.duplicates[0])
        pairs += found.pairs
        lonely += found.images_without_mask
        unused += [m for _, m in found.masks_without_image]
    if not pairs:
        raise DataError(f"{lonely[0] if lonely else root}: no image has a mask of the same name "
                        f"({len(images)} images, {len(masks)} masks)")
    if lonely or unused:
        first = lonely[0] if lonely else unused[0]
        raise DataError(f"{first}: {'no mask for this image' if lonely else 'no image for this mask'} "
                        f"({len(lonely)} images without mask, {len(unused)} masks without image; training needs "
                        "every file paired: move the others out)")
    given = {str(p.image): d.name for d in dirs if d in named for p in pairs if Path(d.images) == p.image.parent}
    sizes: Counter[tuple[int, int]] = Counter()
    for pair in pairs:
        size = image_size(pair.image)
        if size is None:
            size = read_image(pair.image).shape[1::-1]
        sizes[size] += 1
    sides = [s for size in sizes for s in size]
    if max(sides) > MAX_SIZE_RATIO * min(sides):
        small = min(sizes, key=lambda s: s[0] * s[1])
        big = max(sizes, key=lambda s: s[0] * s[1])
        raise DataError(f"{root}: image sizes from {small[0]}x{small[1]} to {big[0]}x{big[1]}, more than "
                        f"{MAX_SIZE_RATIO}x apart: one input size cannot serve both; split them into two datasets")
    picked = _sample(pairs, MASK_SAMPLE)
    raw = [(p.mask, read_mask(p.mask)) for p in picked]
    kind, rgb_map, num_classes, why = mask_kind(raw)
    reasons.append(why)
    decoding = mask_decoding_for(kind, rgb_map, num_classes)
    labels = [decode_mask(m, decoding, str(p))[0] for p, m in raw]
    num_labels = max(num_classes, 2)
    counts = np.zeros(num_labels, np.int64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=num_labels)[:num_labels]
    fractions = tuple(float(c / counts.sum()) for c in counts)
    objects = object_sizes(labels, num_labels)
    grey = [read_image(p.image, 3) for p in picked[:8]]
    channels = 1 if all(np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
                        for g in grey) else 3
    names = _class_names(kind, rgb_map, num_labels)
    return Survey(root, tuple(dirs), tuple(sorted(pairs, key=lambda p: p.image)), given, suffix, sizes, channels, kind,
                  rgb_map, num_classes, names, fractions, objects, reasons)


_COLOUR_NAMES = {(0, 0, 0): "background", (255, 255, 255): "white", (255, 0, 0): "red", (0, 255, 0): "green",
                 (0, 0, 255): "blue", (255, 255, 0): "yellow", (0, 255, 255): "cyan", (255, 0, 255): "magenta",
                 (0, 128, 255): "azure", (255, 128, 0): "orange", (128, 128, 128): "grey"}


def _class_names(kind: str, rgb_map: dict[RGB, int] | None, num_labels: int) -> list[str]:
    """Names to edit later: colours by name where one fits, else class_<i>; background first."""
    if kind == "palette" and rgb_map:
        by_index = {i: c for c, i in sorted(rgb_map.items(), key=lambda kv: kv[1], reverse=True)}
        names = ["background"]
        for i in range(1, num_labels):
            colour = by_index.get(i)
            name = _COLOUR_NAMES.get(colour, f"class_{i}") if colour else f"class_{i}"
            names.append(name if name not in names else f"class_{i}")
        return names
    if num_labels == 2:
        return ["background", "foreground"]
    return ["background", *(f"class_{i}" for i in range(1, num_labels))]


def source_groups(survey: Survey, near_copies: bool = True) -> dict[str, str]:
    """image path -> source group: `flexunet split`'s name prefixes, merged with the doctor's near-copy clusters (a
    flip, rotation or re-encode saved under an unrelated name), so that no source lands in two splits."""
    # names identify sources across folders only when no name repeats in two folders (the demo's cell_0000 is a
    # different cell in train and in test)
    repeated = len({p.stem for p in survey.pairs}) < len(survey.pairs)
    names = {str(p.image): f"{p.image.parent.parent.name}/{source_id(p.stem)}" if repeated else source_id(p.stem)
             for p in survey.pairs}
    return merge_near_copies(names) if near_copies else names
