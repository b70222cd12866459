"""`flexunet doctor`: everything about a dataset that would make training fail or its scores mislead.

Beyond `stats` it decodes every image (unreadable files, size and channel mix, image/mask size mismatch) and looks
for near-duplicates across splits: augmented copies of one source (flipped, rotated, cropped, re-encoded) in
train and test make a test score measure memorisation. The seed made such splits by augmenting before splitting.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flexunet.config.load import load_config
from flexunet.config.schema import Config
from flexunet.config.section import DEFAULT_MAX_PIXELS
from flexunet.data.io import read_image
from flexunet.data.masks import RGB
from flexunet.errors import ConfigError, DataError
from flexunet.files import atomic_write_text
from flexunet.prepare.fingerprint import (
    CHECKED_COPIES,
    DEFAULT_THRESHOLD,
    UNCHECKED_COPIES,
    Fingerprints,
    find_matches,
    fingerprint,
)
from flexunet.prepare.layout import SplitDirs, SplitFiles, find_splits, splits_from_config
from flexunet.prepare.split import source_id
from flexunet.prepare.stats import DatasetStats, SplitStats, dataset_stats, same_file


@dataclass(frozen=True)
class NearDuplicate:
    """`image` (a later split) looks like `match` (an earlier split); `more` other images there also match."""

    image: str
    split: str
    match: str
    match_split: str
    score: float
    more: int


@dataclass(frozen=True)
class SharedFile:
    """One file that two splits both use (a folder named twice, or a split list missing from a section)."""

    image: str
    split: str
    match_split: str


@dataclass(frozen=True)
class NamedCopy:
    """`image` (a later split) carries a seed augmentation prefix of `match`'s source (an earlier split):
    `deformed_alpha_1300_sigmoid_8_22` is image 22 deformed, a copy the fingerprints may not recognise."""

    image: str
    split: str
    match: str
    match_split: str


@dataclass(frozen=True)
class ImageCensus:
    """What decoding every image found: problems, and how many images have each size and colour kind."""

    problems: tuple[str, ...]
    sizes: dict[str, int]  # "WxH" -> number of images
    kinds: dict[str, int]  # "grey" / "colour" -> number of images


@dataclass(frozen=True)
class DoctorReport:
    """The findings of `doctor`, with `leaks` true when any image is shared across splits."""

    target: str
    stats: DatasetStats
    census: ImageCensus
    near_duplicates: tuple[NearDuplicate, ...]
    threshold: float
    seconds: float
    notes: tuple[str, ...] = field(default=())
    shared: tuple[SharedFile, ...] = field(default=())
    named: tuple[NamedCopy, ...] = field(default=())

    @property
    def leaks(self) -> bool:
        return bool(self.near_duplicates or self.stats.duplicates or self.shared or self.named)

    @property
    def problems(self) -> list[str]:
        """One line per problem: files, pairing, decoding, mixes, and a line per split that leaks."""
        out = self.stats.warnings + list(self.census.problems)
        if len(self.census.sizes) > 1:
            out.append(f"{self.target}: images of {len(self.census.sizes)} sizes: {_top(self.census.sizes)}")
        if len(self.census.kinds) > 1:
            out.append(f"{self.target}: grey and colour images mixed: {_top(self.census.kinds)}")
        for s in self.stats.splits:
            if s.empty_masks:
                out.append(f"{s.empty_masks[0]}: mask has no foreground "
                           f"(and {len(s.empty_masks) - 1} more in {s.name})")
        totals = {s.name: len(s.files.images) for s in self.stats.splits}
        for (split, earlier), n in Counter((d.split, d.match_split) for d in self.shared).items():
            out.append(f"{split}: {n} of {totals[split]} images are the same files as in {earlier} "
                       f"(both sections name them: check images_dir and split_file)")
        for (split, earlier), n in Counter((d.split, d.match_split) for d in self.near_duplicates).items():
            out.append(f"{split}: {n} of {totals[split]} images are near-copies of images in {earlier}")
        for (split, earlier), found in _by_pair(self.named).items():
            out.append(f"{split}: {len(found)} of {totals[split]} images are named as augmented copies of sources in "
                       f"{earlier} (e.g. {Path(found[0].image).name} ~ {Path(found[0].match).name}): copies such as "
                       "elastic or barrel distortions that the fingerprints may miss")
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "seconds": round(self.seconds, 2),
            "threshold": self.threshold,
            "rgb_map": {str(k): v for k, v in (self.stats.rgb_map or {}).items()} or None,
            "splits": {s.name: {"pairs": len(s.files.pairs), "images_digest": images_digest(s.files),
                                "images_without_mask": [str(p) for p in s.files.images_without_mask],
                                "masks_without_image": [str(p) for p in s.files.masks_without_image],
                                "empty_masks": [str(p) for p in s.empty_masks],
                                "class_fractions": [round(f, 6) for f in s.class_fractions]}
                       for s in self.stats.splits},
            "image_sizes": self.census.sizes,
            "image_kinds": self.census.kinds,
            "exact_duplicates": [[str(a), str(b)] for a, b in self.stats.duplicates],
            "near_duplicates": [asdict(d) for d in self.near_duplicates],
            "shared_files": [asdict(d) for d in self.shared],
            "name_copies": [asdict(d) for d in self.named],
            "problems": self.problems,
            "notes": list(self.notes),
            "leaks": self.leaks,
        }

    def write_json(self, path: Path) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path


def images_digest(files: SplitFiles | list[Path]) -> str:
    """SHA-1 of a split's sorted image file names: tells whether a saved report describes the files evaluated."""
    paths = files.images if isinstance(files, SplitFiles) else files
    return hashlib.sha1("\n".join(sorted(p.name for p in paths)).encode()).hexdigest()


def _top(counts: Mapping[str, int], n: int = 4) -> str:
    return ", ".join(f"{k} ({v})" for k, v in Counter(counts).most_common(n))


def census_images(stats: DatasetStats, max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> tuple[ImageCensus, dict[str, tuple[list[Path], list[np.ndarray]]]]:
    """Decode every image once (up to `max_pixels`): problems and size/kind counts, plus the decoded images."""
    problems: list[str] = []
    sizes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    decoded: dict[str, tuple[list[Path], list[np.ndarray]]] = {}
    for s in stats.splits:
        masks = {p.image: p.mask for p in s.files.pairs}
        paths, images = [], []
        for path in s.files.images:
            try:
                image = read_image(path, max_pixels=max_pixels)  # (H, W, 3) RGB
            except DataError as exc:
                problems.append(str(exc))
                continue
            h, w = image.shape[:2]
            sizes[f"{w}x{h}"] += 1
            grey = bool(np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2]))
            kinds["grey" if grey else "colour"] += 1
            if path in masks:
                mask_size = s.mask_sizes.get(masks[path])
                if mask_size and mask_size != (w, h):
                    problems.append(f"{masks[path]}: mask is {mask_size[0]}x{mask_size[1]} but its image is {w}x{h}")
            paths.append(path)
            images.append(image)
        decoded[s.name] = (paths, images)
    return ImageCensus(tuple(problems), dict(sizes), dict(kinds)), decoded


def find_leaks(decoded: dict[str, tuple[list[Path], list[np.ndarray]]], threshold: float = DEFAULT_THRESHOLD
               ) -> list[NearDuplicate]:
    """For each image and each earlier split (train first), its best match there when one scores >= threshold.

    Earlier splits are searched one at a time, so a test image copied in both train and valid is reported twice.
    A file that two splits both use is not a copy of itself (`shared_files` reports it).
    """
    names = list(decoded)
    prints: dict[str, Fingerprints] = {n: fingerprint(decoded[n][1]) for n in names}
    out = []
    for k, name in enumerate(names):
        for earlier in names[:k]:
            best: dict[int, list] = {}
            for m in find_matches(prints[name], prints[earlier], threshold):
                if not same_file(decoded[name][0][m.query], decoded[earlier][0][m.ref]):
                    best.setdefault(m.query, []).append(m)
            for i, matches in sorted(best.items()):
                top = max(matches, key=lambda m: m.score)
                out.append(NearDuplicate(str(decoded[name][0][i]), name, str(decoded[earlier][0][top.ref]), earlier,
                                         round(top.score, 4), len(matches) - 1))
    return out


def _by_pair(named: Sequence[NamedCopy]) -> dict[tuple[str, str], list[NamedCopy]]:
    out: dict[tuple[str, str], list[NamedCopy]] = {}
    for d in named:
        out.setdefault((d.split, d.match_split), []).append(d)
    return out


def name_copies(splits: tuple[SplitStats, ...]) -> list[NamedCopy]:
    """Images of each split whose name is a seed augmentation of a source in an earlier split (`flexunet split`'s
    prefixes: flipped_, rotated_90_, deformed_alpha_1300_sigmoid_8_, barrdistorted_..., ...). Equal names are left
    to the fingerprints: the demo's train/cell_0000 and test/cell_0000 are two cells."""
    out = []
    for k, split in enumerate(splits):
        for earlier in splits[:k]:
            sources: dict[str, Path] = {}
            for path in earlier.files.images:
                sources.setdefault(source_id(path.stem), path)
            for path in split.files.images:
                match = sources.get(source_id(path.stem))
                if match is not None and match.stem != path.stem:
                    out.append(NamedCopy(str(path), split.name, str(match), earlier.name))
    return out


def shared_files(splits: tuple[SplitStats, ...]) -> list[SharedFile]:
    """Files of each split that an earlier split (train first) also uses."""
    out = []
    for k, split in enumerate(splits):
        for earlier in splits[:k]:
            theirs = {p.resolve() for p in earlier.files.images}
            out += [SharedFile(str(p), split.name, earlier.name) for p in split.files.images if p.resolve() in theirs]
    return out


def doctor(target: Path, threshold: float = DEFAULT_THRESHOLD, rgb_map: Mapping[RGB, int] | None = None,
           mask_suffix: str = "", tolerance: float = 40.0, overrides: Sequence[str] = ()) -> DoctorReport:
    """Examine a dataset folder (`<split>/{images,masks}`) or the splits named by a config file.

    A config file is read with its `--set` style `overrides` and examined by `doctor_config`. For a folder, binary
    masks are recognised as grey and colour masks get their frequent colours as classes unless `rgb_map` is given.
    """
    target = Path(target)
    if target.is_file():
        return doctor_config(load_config(target, overrides), threshold)
    if overrides:
        raise ConfigError(f"{target}: --set needs a config file; this is a folder")
    return _examine(str(target), find_splits(target), threshold, rgb_map, mask_suffix, tolerance)


def doctor_config(cfg: Config, threshold: float = DEFAULT_THRESHOLD) -> DoctorReport:
    """Examine the files each of [train], [valid] and [test] really uses: their folders or folder patterns, kept to
    the stems their `split_file` lists, paired as training pairs them; [mask] says how masks are read, [image]
    max_pixels which files are too large to decode."""
    rgb_map = None if cfg.model.num_classes == 1 else cfg.rgb_map
    return _examine(cfg.source or "<config>", splits_from_config(cfg), threshold, rgb_map, cfg.mask.mask_suffix,
                    cfg.mask.color_tolerance, cfg.mask.mask_file_format, cfg.notes, cfg.image.pixel_limit())


def _examine(target: str, splits: list[SplitDirs], threshold: float, rgb_map: Mapping[RGB, int] | None,
             mask_suffix: str, tolerance: float, mask_extension: str | None = None,
             notes: tuple[str, ...] = (), max_pixels: int = DEFAULT_MAX_PIXELS) -> DoctorReport:
    start = time.perf_counter()
    stats = dataset_stats(Path(target), rgb_map, mask_suffix, tolerance, splits=splits, mask_extension=mask_extension,
                          max_pixels=max_pixels)
    if rgb_map is None and stats.rgb_map is not None:
        notes = (*notes, f"no rgb_map given: classes taken from the frequent mask colours {stats.rgb_map}")
    if stats.instances:
        notes = (*notes, "the masks are instance labels (16-bit ids, one per object): examined with every id as "
                         'foreground; a config must say [mask] kind = "instances" (grey thresholding reads ids below '
                         "257 as background)")
    census, decoded = census_images(stats, max_pixels)
    leaks = find_leaks(decoded, threshold) if len(decoded) > 1 else []
    return DoctorReport(target, stats, census, tuple(leaks), threshold, time.perf_counter() - start, tuple(notes),
                        tuple(shared_files(stats.splits)), tuple(name_copies(stats.splits)))


def format_report(report: DoctorReport, limit: int = 20) -> list[str]:
    """The summary a user reads first: counts, problems (first `limit`), a few copies across splits, the verdict."""
    lines = [f"doctor {report.target}: {report.seconds:.1f} s"]
    for s in report.stats.splits:
        fractions = " ".join(f"{f:.3f}" for f in s.class_fractions)
        lines.append(f"  {s.name}: {len(s.files.pairs)} pairs; class pixel fractions {fractions}")
    lines += [f"  note: {n}" for n in report.notes]
    problems = report.problems
    lines += [f"  problem: {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more problems (all in the JSON report)")
    for d in report.near_duplicates[:5]:
        lines.append(f"  copy: {d.image} ~ {d.match} (score {d.score:.3f}, {d.more} more in {d.match_split})")
    verdict = ("LEAK: the same images (or augmented copies) are in two splits" if report.leaks
               else f"no images shared across splits (checked: {CHECKED_COPIES}, seed-prefixed names; not checked: "
                    f"{UNCHECKED_COPIES})")
    lines.append(f"  {'no problems; ' if not problems else ''}{verdict}")
    return lines
