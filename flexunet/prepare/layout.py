"""The flexunet dataset layout: `<root>/<split>/{images,masks}` (or `<root>/{images,masks}`), and what is in it.

Unlike `pair_files`, which stops at the first unpaired file because training cannot go on, these functions
list every unpaired file so that `stats` and `doctor` can report them all at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flexunet.config.schema import Config
from flexunet.data.pairing import Pair, expand_dirs, match_pairs
from flexunet.data.split_file import split_stems
from flexunet.errors import DataError

SPLIT_ORDER = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitDirs:
    """Where one split's images and masks live (folders or folder patterns such as `train/*/images`).

    With a `split_file`, only the stems it lists for `name` belong to the split, as in training.
    """

    name: str
    images: str
    masks: str
    split_file: str | None = None


@dataclass(frozen=True)
class SplitFiles:
    """One split's files: pairs matched by stem, and the files that have no partner."""

    name: str
    pairs: tuple[Pair, ...]
    images_without_mask: tuple[Path, ...]
    masks_without_image: tuple[Path, ...]
    problems: tuple[str, ...] = ()  # stems found twice, a split list that keeps nothing

    @property
    def images(self) -> list[Path]:
        return [p.image for p in self.pairs] + list(self.images_without_mask)


def _split_rank(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def find_splits(root: Path) -> list[SplitDirs]:
    """Splits under a dataset folder, train first: every sub-folder holding `images/`, or the folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    found = [SplitDirs(d.name, str(d / "images"), str(d / "masks"))
             for d in root.iterdir() if (d / "images").is_dir()]
    if (root / "images").is_dir():
        found.append(SplitDirs("all", str(root / "images"), str(root / "masks")))
    if not found:
        raise DataError(f"{root}: no images/ folder in it or in its sub-folders "
                        "(expected <split>/images, <split>/masks)")
    return sorted(found, key=lambda s: _split_rank(s.name))


def splits_from_config(cfg: Config) -> list[SplitDirs]:
    """The [train], [valid] and [test] folders a config names (sections without folders are left out)."""
    out = []
    for name in SPLIT_ORDER:
        section = getattr(cfg, name)
        if section.images_dir:
            out.append(SplitDirs(name, section.images_dir, section.masks_dir or "", section.split_file))
    if not out:
        raise DataError(f"{cfg.source}: no [train], [valid] or [test] images_dir to examine")
    return out


def scan_split(split: SplitDirs, mask_suffix: str = "", mask_extension: str | None = None) -> SplitFiles:
    """Pair images and masks of one split as training does, keeping every unpaired file (a missing mask folder: all)."""
    found = match_pairs(expand_dirs(split.images), expand_dirs(split.masks) if split.masks else [], mask_suffix,
                        mask_extension)
    pairs, lonely, unused = found.pairs, found.images_without_mask, found.masks_without_image
    problems = list(found.duplicates)
    if split.split_file:
        wanted = split_stems(split.split_file, split.name)
        pairs = tuple(p for p in pairs if p.stem in wanted)
        lonely = tuple(p for p in lonely if p.stem in wanted)
        unused = tuple((stem, m) for stem, m in unused if stem in wanted)
        if not pairs:
            problems.append(f"{split.split_file}: no stem listed for split '{split.name}' is in {split.images}")
    return SplitFiles(split.name, pairs, lonely, tuple(sorted(m for _, m in unused)), tuple(problems))
