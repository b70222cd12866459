"""`flexunet split`: split image/mask pairs into train/valid/test so that no source crosses two splits.

Augmented copies of one source (`flipped_X`, `rotated_90_X`, …) share a group id, and a group goes to one split as
a whole; otherwise a test score measures how well the model remembers a rotated training image.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flexunet.config.folders import overlap_problems
from flexunet.data.pairing import Pair, pair_files
from flexunet.data.split_file import write_split_file
from flexunet.errors import DataError, OutputError
from flexunet.files import Protected, check_outputs, guarded, place_file

SPLIT_NAMES = ("train", "valid", "test")
# One seed augmentation prefix: a word, then parameters such as `_90`, `_0.3`, `_alpha_1300`, `_rsigma0.5`, then `_`.
_PREFIX = (r"(?:flipped|mirrored|hflipped|vflipped|hvflipped|rotated|shrinked|shrunk|sheared|deformed|distorted"
           r"|barrdistorted|pincdistorted|sharpened|brightened)(?:_(?:[a-z]+_)?[a-z]*-?\d[\d.]*)*_")
SEED_PREFIXES = re.compile(rf"^(?:{_PREFIX})+")


@dataclass(frozen=True)
class SplitResult:
    """Where each pair went: the split list file, the counts, and the group sizes per split."""

    split_file: Path
    pairs: dict[str, tuple[Pair, ...]]  # split name -> pairs
    groups: dict[str, int]  # split name -> number of groups
    copied_to: Path | None


def source_id(stem: str, group_by: re.Pattern[str] | None = None) -> str:
    """The id shared by all copies of one source: the stem without seed prefixes, or `group_by`'s first group.

    A stem that `group_by` does not match is its own group.
    """
    if group_by is None:
        return SEED_PREFIXES.sub("", stem)
    found = group_by.search(stem)
    if not found:
        return stem
    return found.group(1) if group_by.groups else found.group(0)


def merge_near_copies(groups: Mapping[str, str]) -> dict[str, str]:
    """image path -> group, with groups joined wherever the doctor's fingerprints link two images as near-copies (a
    flip or rotation saved under an unrelated name): the smallest group name of each joined set names it."""
    from flexunet.prepare.fingerprint import near_copy_clusters

    images = list(groups)
    if len(images) < 2:
        return dict(groups)
    root: dict[str, str] = {}

    def find(x: str) -> str:
        while root.get(x, x) != x:
            x = root[x]
        return x

    first: dict[str, str] = {}
    for image, cluster in zip(images, near_copy_clusters([Path(i) for i in images]), strict=True):
        a, b = find(groups[image]), find(first.setdefault(cluster, groups[image]))
        if a != b:
            root[max(a, b)] = min(a, b)
    return {image: find(groups[image]) for image in images}


def assign_groups(sizes: dict[str, int], ratios: tuple[float, ...], seed: int) -> dict[str, int]:
    """Group id -> split index: groups in seeded random order, each to the split furthest below its target.

    Sorting before shuffling makes the result depend only on the seed and the set of groups.
    """
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    total = sum(sizes.values())
    filled = [0] * len(ratios)
    # with enough groups every split asked for gets at least one, so a small dataset has a non-empty test set
    first = [i for i, ratio in enumerate(ratios) if ratio > 0] if len(order) >= len(ratios) else []
    out = {}
    for n, group in enumerate(order):
        deficits = [ratio * total - have for ratio, have in zip(ratios, filled, strict=True)]
        index = first[n] if n < len(first) else max(range(len(ratios)), key=lambda i: (deficits[i], -i))
        out[group] = index
        filled[index] += sizes[group]
    return out


def split_dataset(images_dir: str | Path, masks_dir: str | Path, out: str | Path,
                  ratios: tuple[float, ...] = (0.8, 0.1, 0.1), group_by: str | None = None, seed: int = 137,
                  mask_suffix: str = "", files: str = "none") -> SplitResult:
    """Split pairs by source group, write `<out>/split.csv`, and with files="copy"|"link" fill `<out>/<split>/`.

    Raises DataError when ratios are not 2 or 3 non-negative numbers summing to 1, or when `out` already holds
    split folders (a split is never overwritten); OutputError when files are placed in an `out` that is or holds an
    input folder.
    """
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"ratios {ratios}: need 2 or 3 non-negative fractions (train, valid[, test]) summing to 1")
    if files not in ("none", "copy", "link"):
        raise DataError(f"files = {files!r}: choose none, copy or link")
    try:
        pattern = re.compile(group_by) if group_by else None
    except re.error as exc:
        raise DataError(f"--group-by {group_by!r}: not a regular expression ({exc})") from None
    out = Path(out)
    names = SPLIT_NAMES[: len(ratios)]
    inputs = [("IMAGES_DIR", str(images_dir)), ("MASKS_DIR", str(masks_dir))]
    problems = overlap_problems([(f"split --files {files}: OUT", out)], inputs) if files != "none" else []
    if problems:
        raise OutputError("\n".join(problems))
    if files != "none" and any((out / n).exists() for n in names):
        raise DataError(f"{out}: already holds split folders; choose an empty output folder")
    pairs = pair_files(str(images_dir), str(masks_dir), mask_suffix)
    groups: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[source_id(pair.stem, pattern)].append(pair)
    where = assign_groups({g: len(p) for g, p in groups.items()}, ratios, seed)
    by_split: dict[str, list[Pair]] = {n: [] for n in names}
    rows = []
    for group, members in groups.items():
        name = names[where[group]]
        by_split[name] += members
        rows += [(p.stem, group, name) for p in members]
    placed = [(pair.image, out / name / "images" / pair.image.name) for name, members in by_split.items()
              for pair in members] + [(pair.mask, out / name / "masks" / pair.mask.name)
                                      for name, members in by_split.items() for pair in members]
    placed = placed if files != "none" else []
    with guarded([Protected(Path(images_dir), "IMAGES_DIR"), Protected(Path(masks_dir), "MASKS_DIR")]):
        check_outputs([out / "split.csv"] + [target for _, target in placed])  # before anything is written
        split_file = write_split_file(out / "split.csv", rows)
        for source, target in placed:
            place_file(source, target, link=files == "link")
    counts = {n: sum(1 for g, i in where.items() if names[i] == n) for n in names}
    return SplitResult(split_file, {n: tuple(sorted(p, key=lambda p: p.image)) for n, p in by_split.items()},
                       counts, out if files != "none" else None)
