"""Dataset statistics: files per split, class pixel fractions, unpaired files, unmapped colours, exact duplicates.

The seed's DatasetStatistics only counted images per split; a class imbalance, a wrong rgb_map or the same file
in train and test changes what a score means, so they are counted here too.
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexunet.config.section import DEFAULT_MAX_PIXELS
from flexunet.data.io import read_mask
from flexunet.data.masks import RGB, MaskDecoding, as_rgb, colour_levels, decode_mask, holds_instance_ids, is_grey
from flexunet.errors import DataError
from flexunet.files import atomic_write_bytes
from flexunet.prepare.layout import SplitDirs, SplitFiles, find_splits, scan_split

# A colour covering at least this share of some mask is taken as a class when no rgb_map is given.
_CLASS_COLOUR_SHARE = 0.01


@dataclass(frozen=True)
class UnmappedColour:
    """A mask colour far from every rgb_map colour, the colour it would snap to, and its share of the mask."""

    mask: Path
    colour: RGB
    nearest: RGB
    fraction: float


@dataclass(frozen=True)
class SplitStats:
    """Counts of one split: pairs, unpaired files, pixels and images per class, masks with no foreground."""

    name: str
    files: SplitFiles
    class_pixels: tuple[int, ...]  # (num_labels,) pixels of each class over all readable masks
    images_per_class: tuple[int, ...]  # (num_labels,) masks in which the class occurs
    empty_masks: tuple[Path, ...]
    unreadable: tuple[str, ...]  # one-line DataError messages
    unmapped: tuple[UnmappedColour, ...]
    mask_sizes: dict[Path, tuple[int, int]]  # (width, height) of every readable mask

    @property
    def class_fractions(self) -> tuple[float, ...]:
        total = sum(self.class_pixels)
        return tuple(c / total if total else 0.0 for c in self.class_pixels)


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of every split, the colour map used to read the masks, and files shared by two splits."""

    root: str
    splits: tuple[SplitStats, ...]
    rgb_map: dict[RGB, int] | None  # None: binary masks (grey > threshold is foreground)
    duplicates: tuple[tuple[Path, Path], ...]  # byte-identical images in two different splits
    instances: bool = False  # the masks are instance labels (16-bit ids): every id is foreground

    @property
    def warnings(self) -> list[str]:
        """One line per problem a user should look at before training."""
        out = []
        for s in self.splits:
            out += [f"{p}: no mask with stem '{p.stem}'" for p in s.files.images_without_mask]
            out += [f"{p}: no image with this stem in {s.name}" for p in s.files.masks_without_image]
            out += list(s.files.problems) + list(s.unreadable)
            by_colour: dict[tuple[RGB, RGB], list[UnmappedColour]] = {}
            for u in s.unmapped:  # one line per stray colour, not per mask: edge colours recur in every mask
                by_colour.setdefault((u.colour, u.nearest), []).append(u)
            for (colour, nearest), found in by_colour.items():
                worst = max(found, key=lambda u: u.fraction)
                more = f" and {len(found) - 1} more masks" if len(found) > 1 else ""
                out.append(f"{worst.mask}: colour {colour} is not in the rgb_map; nearest is {nearest} "
                           f"({worst.fraction:.2%} of the mask{more})")
        out += [f"{b}: same bytes as {a} (in another split)" for a, b in self.duplicates]
        return out


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file (links and `..` resolved)."""
    return a == b or a.resolve() == b.resolve()


def file_digest(path: Path) -> str:
    """SHA-1 of the file bytes: equal digests mean the same file copied, whatever its name. Read in 1 MiB blocks:
    a 50 GB sparse "PNG" was read into memory whole."""
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def exact_duplicates(splits: list[SplitFiles]) -> list[tuple[Path, Path]]:
    """Images whose bytes also occur in an earlier split: (first file seen, later copy).

    A file listed in two splits is not its own copy: `doctor` reports such shared files on their own.
    """
    seen: dict[str, tuple[str, Path]] = {}
    out = []
    sizes = Counter(_size(path) for split in splits for path in split.images)
    for split in splits:
        for path in split.images:
            if sizes[_size(path)] < 2:  # no other file of its length: no copy, and nothing to read
                continue
            digest = file_digest(path)
            if digest in seen and seen[digest][0] != split.name and not same_file(seen[digest][1], path):
                out.append((seen[digest][1], path))
            seen.setdefault(digest, (split.name, path))
    return out


def _colour_counts(mask: np.ndarray) -> Counter[RGB]:
    mask = colour_levels(mask)  # 16-bit colours on their 8-bit levels, as training reads them
    packed = (mask[..., 0].astype(np.int32) << 16) | (mask[..., 1].astype(np.int32) << 8) | mask[..., 2]
    unique, counts = np.unique(packed, return_counts=True)  # 1-D unique: far faster than unique(axis=0)
    return Counter({(int(u) >> 16, (int(u) >> 8) & 255, int(u) & 255): int(c)
                    for u, c in zip(unique, counts, strict=True)})


def infer_rgb_map(masks: list[np.ndarray]) -> dict[RGB, int] | None:
    """None when every mask is grey (binary); else the colours big enough to be classes, black first.

    A colour is a class when it covers a share of at least one mask; anti-aliased edge colours never do.
    """
    colour = [m for m in masks if not is_grey(m)]
    if not colour:
        return None
    total: Counter[RGB] = Counter()
    classes: set[RGB] = set()
    for mask in colour:
        counts = _colour_counts(mask)
        total.update(counts)
        classes |= {c for c, n in counts.items() if n >= _CLASS_COLOUR_SHARE * mask.shape[0] * mask.shape[1]}
    return {c: i for i, c in enumerate(sorted(classes, key=lambda c: (sum(c) > 0, -total[c])))}


def _worst_unmapped(path: Path, mask: np.ndarray, rgb_map: Mapping[RGB, int], tolerance: float) -> UnmappedColour:
    """The most frequent colour of `mask` farther than `tolerance` from every rgb_map colour."""
    if mask.ndim == 2:
        mask = np.repeat(mask[:, :, None], 3, axis=2)
    counts = _colour_counts(mask)
    colours = np.array(list(rgb_map), dtype=np.int32)  # (K, 3)
    found = np.array(list(counts), dtype=np.int32)  # (U, 3)
    dist2 = ((found[:, None, :] - colours[None]) ** 2).sum(axis=2)  # (U, K)
    far = np.flatnonzero(dist2.min(axis=1) > tolerance**2)
    worst = max(far, key=lambda i: counts[as_rgb(found[i])])
    colour = as_rgb(found[worst])
    nearest = as_rgb(colours[dist2[worst].argmin()])
    return UnmappedColour(path, colour, nearest, counts[colour] / (mask.shape[0] * mask.shape[1]))


def stats_decoding(rgb_map: Mapping[RGB, int] | None, tolerance: float = 40.0,
                   instances: bool = False) -> MaskDecoding:
    """Training's decoding for these masks: binary (0/1 masks as labels, others grey > 127), instance ids (every
    id foreground) or the rgb_map."""
    if rgb_map is None:
        return MaskDecoding(num_classes=1, instances=instances)
    return MaskDecoding(num_classes=max(max(rgb_map.values()) + 1, 2), rgb_map=rgb_map, color_tolerance=tolerance)


def split_stats(files: SplitFiles, rgb_map: Mapping[RGB, int] | None, tolerance: float = 40.0,
                max_pixels: int = DEFAULT_MAX_PIXELS, instances: bool = False) -> SplitStats:
    """Read every mask of one split once (up to `max_pixels`) and count its classes, decoded as training does."""
    num_labels = 2 if rgb_map is None else max(rgb_map.values()) + 1
    decoding = stats_decoding(rgb_map, tolerance, instances)
    pixels = np.zeros(num_labels, dtype=np.int64)
    present = np.zeros(num_labels, dtype=np.int64)
    empty, unreadable, unmapped, sizes = [], [], [], {}
    for pair in files.pairs:
        try:
            mask = read_mask(pair.mask, max_pixels)
            sizes[pair.mask] = (mask.shape[1], mask.shape[0])
            labels, far = decode_mask(mask, decoding, str(pair.mask))
        except DataError as exc:  # unreadable, or label values training would refuse
            unreadable.append(str(exc))
            continue
        counts = np.bincount(labels.ravel(), minlength=num_labels)[:num_labels]
        pixels += counts
        present += counts > 0
        if counts[1:].sum() == 0:
            empty.append(pair.mask)
        if far > 0 and rgb_map is not None:
            unmapped.append(_worst_unmapped(pair.mask, mask, rgb_map, tolerance))
    return SplitStats(files.name, files, tuple(int(v) for v in pixels), tuple(int(v) for v in present),
                      tuple(empty), tuple(unreadable), tuple(unmapped), sizes)


def _sample_masks(splits: list[SplitFiles], max_pixels: int, limit: int = 64) -> list[np.ndarray]:
    pairs = [p for s in splits for p in s.pairs]
    picks = sorted(set(np.linspace(0, len(pairs) - 1, min(limit, len(pairs))).round().astype(int))) if pairs else []
    out = []
    for i in picks:
        try:
            out.append(read_mask(pairs[i].mask, max_pixels))
        except DataError:
            continue
    return out


def dataset_stats(root: Path | None = None, rgb_map: Mapping[RGB, int] | None = None, mask_suffix: str = "",
                  tolerance: float = 40.0, splits: list[SplitDirs] | None = None,
                  mask_extension: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> DatasetStats:
    """Statistics of a dataset folder (or of given split folders); rgb_map None: inferred from the masks. Masks
    over `max_pixels` ([image] max_pixels) are reported as unreadable, never decoded."""
    if splits is None and root is None:
        raise TypeError("dataset_stats: give root or splits")
    dirs = splits if splits is not None else find_splits(Path(str(root)))
    files = [scan_split(d, mask_suffix, mask_extension) for d in dirs]
    sample = _sample_masks(files, max_pixels)
    chosen = dict(rgb_map) if rgb_map is not None else infer_rgb_map(sample)
    instances = chosen is None and any(holds_instance_ids(m) for m in sample)
    stats = tuple(split_stats(f, chosen, tolerance, max_pixels, instances) for f in files)
    return DatasetStats(str(root or dirs[0].images), stats, chosen, tuple(exact_duplicates(files)), instances)


def format_stats(stats: DatasetStats) -> list[str]:
    """Plain-text lines: one per split with counts and class fractions, then the warnings."""
    reading = "binary (0/1 masks as labels, else grey > 127)" if stats.rgb_map is None else f"rgb_map {stats.rgb_map}"
    if stats.instances:
        reading = ("instance labels (16-bit ids, one per object; every id is foreground): a config needs "
                   '[mask] kind = "instances", or ids below 257 are read as background')
    lines = [f"masks read as {reading}"]
    for s in stats.splits:
        fractions = " ".join(f"{f:.3f}" for f in s.class_fractions)
        lines.append(f"{s.name}: {len(s.files.pairs)} pairs, {len(s.files.images_without_mask)} images without mask, "
                     f"{len(s.files.masks_without_image)} masks without image, {len(s.empty_masks)} empty masks; "
                     f"class pixel fractions {fractions}; images per class {list(s.images_per_class)}")
    return lines


def plot_stats(stats: DatasetStats, path: Path) -> Path:
    """Bar charts of pairs per split and class pixel fractions per split, saved as PNG (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in stats.splits]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    counts = [len(s.files.pairs) for s in stats.splits]
    bars = left.bar(names, counts, color="tab:blue")
    left.bar_label(bars)
    left.set_ylabel("image/mask pairs")
    left.set_title(Path(stats.root).name)
    num_labels = len(stats.splits[0].class_pixels) if stats.splits else 0
    width = 0.8 / max(num_labels, 1)
    for c in range(num_labels):
        x = [i + (c - (num_labels - 1) / 2) * width for i in range(len(names))]
        right.bar(x, [s.class_fractions[c] for s in stats.splits], width, label=f"class {c}")
    right.set_xticks(range(len(names)), names)
    right.set_yscale("log")
    right.set_ylabel("fraction of mask pixels")
    right.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
