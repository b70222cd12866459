"""Which images of the evaluated split are copies of one source, so the bootstrap draws them together.

A grouped split keeps each source cell in one split, but its 13 flips and rotations all land in test: they are one
draw from the population, not 13. The groups come from the split list's `group` column when the section has one,
else from the seed prefixes that `flexunet split` strips (`flipped_`, `rotated_90_`, ...), else, for copies renamed
beyond recognition, from the doctor's fingerprints: images that are near-copies of each other form one group.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flexunet.config.schema import Config
from flexunet.data.pairing import Pair
from flexunet.data.split_file import read_split_groups
from flexunet.files import written_by_flexunet
from flexunet.prepare.fingerprint import near_copy_clusters
from flexunet.prepare.split import source_id

UNIT_GROUPS = "source groups"
UNIT_IMAGES = "images"
# Fingerprinting decodes every image of the split again: done only up to this many (as the doctor's automatic run).
MAX_FINGERPRINTED = 5000


@dataclass(frozen=True)
class Resampling:
    """What the bootstrap draws: `count` source groups (`groups` (N,) each image's index) or single images."""

    unit: str  # UNIT_GROUPS or UNIT_IMAGES
    count: int
    source: str  # where the groups came from, in words
    groups: Tensor | None  # (N,) group index in 0..count-1; None when images are resampled

    def to_dict(self) -> dict[str, object]:
        return {"unit": self.unit, "count": self.count, "source": self.source}


def resampling_from_labels(labels: Sequence[str], source: str) -> Resampling:
    """Groups from one label per image; images alone when every label is different (no group has two images)."""
    names, index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    if len(names) == len(labels):
        return Resampling(UNIT_IMAGES, len(labels), f"{source}: every image is its own source", None)
    return Resampling(UNIT_GROUPS, len(names), source, torch.from_numpy(index.reshape(-1)).long())


def image_resampling(stems: Sequence[str], split_groups: Mapping[str, str] | None = None,
                     split_file: str = "the split file") -> Resampling:
    """The split list's groups when it names every stem, else the file-name prefixes `flexunet split` strips."""
    if split_groups and all(s in split_groups for s in stems):
        return resampling_from_labels([split_groups[s] for s in stems], f"group column of {split_file}")
    return resampling_from_labels([source_id(s) for s in stems], "file-name prefixes, as `flexunet split` groups")


def placed_split_file(images_dir: str | None) -> Path | None:
    """The split.csv that `flexunet split --files copy|link` wrote beside the split folders it filled
    (`<out>/split.csv` for `<out>/test/images`): its group column holds the groups given with --group-by (slides,
    patients), which file names alone do not carry."""
    if not images_dir or any(c in images_dir for c in "*?["):
        return None
    found = Path(images_dir).parent.parent / "split.csv"
    return found if found.is_file() and written_by_flexunet(found) else None


def resampling_for(cfg: Config, section: str, pairs: Sequence[Pair], fingerprints: bool = True) -> Resampling:
    """How the bootstrap of [section] resamples: by the groups of its split_file, or of its file names, or (with
    `fingerprints`, on splits of at most MAX_FINGERPRINTED images) by clusters of near-copies."""
    split_file = getattr(cfg, section).split_file or placed_split_file(getattr(cfg, section).images_dir)
    stems = [p.stem for p in pairs]
    found = image_resampling(stems, read_split_groups(split_file) if split_file else None, str(split_file))
    if found.unit == UNIT_GROUPS or not fingerprints or len(pairs) > MAX_FINGERPRINTED:
        return found
    source = "file names and the doctor's near-copy fingerprints (renamed flips, rotations, crops)"
    return resampling_from_labels(near_copy_clusters([p.image for p in pairs]), source)
