"""Label maps as objects: small specks removed, holes filled, the largest object kept, touching objects separated.

A short training leaves stray positive pixels in corners and nuclei broken into dozens of pieces; none of that is
visible in pixel Dice but all of it is in a cell count. Each step works on one class's mask at a time, with
scikit-image's connected components (8-connected, as the objects of `flexunet.metrics.objects`) and scipy's hole
filling, and returns a label map of the same shape, so evaluate, infer (whole and tiled) and the Python API apply the
same function after thresholding. scipy and scikit-image are imported where they are used: infer imports this
module, and the training path (previews, `flexunet train` with the seed's FlexUNet) must not pay their start-up.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flexunet.config.schema import Config
from flexunet.errors import ConfigError

Separation = Literal["none", "watershed"]


@dataclass(frozen=True)
class ClassPostprocess:
    """What is done to one class's mask, in this order: specks removed, holes filled, the largest object kept."""

    min_object_px: int = 0  # objects of fewer pixels are removed
    min_object_fraction: float = 0.0  # ... or of less than this fraction of the image's pixels
    fill_holes: bool = False  # background enclosed by the class becomes the class
    keep_largest: bool = False  # only the largest object stays (one object per image, e.g. a lesion)
    separate: Separation = "none"  # objects of `instances`: connected components, or split by watershed
    min_distance: int = 5  # watershed: fewest pixels between two object centres
    compactness: float = 0.0  # watershed: > 0 gives rounder, more even objects

    def min_size(self, image_px: int) -> int:
        """Fewest pixels an object keeps: the larger of min_object_px and min_object_fraction of the image."""
        return max(self.min_object_px, math.ceil(self.min_object_fraction * image_px))

    @property
    def changes_pixels(self) -> bool:
        """True when `postprocess_labels` can change this class's pixels (separation only changes instances)."""
        return self.min_object_px > 0 or self.min_object_fraction > 0 or self.fill_holes or self.keep_largest

    def describe(self) -> str:
        """`min_object_px=20, fill_holes` / `off`: the choice as the report prints it."""
        parts = [f"min_object_px={self.min_object_px}"] if self.min_object_px else []
        parts += [f"min_object_fraction={self.min_object_fraction:g}"] if self.min_object_fraction else []
        parts += [name for name in ("fill_holes", "keep_largest") if getattr(self, name)]
        return ", ".join(parts) or "off"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# label (1, 2, ...) -> what is done to that class; a label absent from the mapping is left as it is
PostprocessSettings = Mapping[int, ClassPostprocess]
OFF = ClassPostprocess()
# the keys `[postprocess] auto` chooses on the validation split
AUTO_KEYS = ("min_object_px", "min_object_fraction", "fill_holes", "keep_largest")


def clean_mask(mask: np.ndarray, settings: ClassPostprocess) -> np.ndarray:
    """One class's boolean mask (H, W) after removing small objects, filling holes and keeping the largest."""
    from scipy import ndimage
    from skimage.measure import label as connected_components

    out = mask.astype(bool, copy=True)
    min_size = settings.min_size(mask.size)
    if min_size > 1 and out.any():
        components = connected_components(out, connectivity=2)
        areas = np.bincount(components.ravel())
        small = areas < min_size
        small[0] = False  # background is not an object
        out[small[components]] = False
    if settings.fill_holes and out.any():
        out = ndimage.binary_fill_holes(out)
    if settings.keep_largest and out.any():
        components = connected_components(out, connectivity=2)
        areas = np.bincount(components.ravel())
        areas[0] = 0
        out = components == int(areas.argmax())  # ties: the first object in raster order
    return out


def postprocess_labels(labels: np.ndarray, probs: np.ndarray | None, settings: PostprocessSettings) -> np.ndarray:
    """Labels (H, W) after each class's `clean_mask`, classes in increasing order, repeated until no class loses a
    pixel.

    Pixels a class loses take the most probable label that has not already lost them (`probs` (C, H, W), C > 1),
    or background for binary models and without probs. The repetition matters: a speck of class 2 handed to class 1,
    already cleaned, would otherwise stay as a class-1 speck under class 1's threshold. A pass is repeated only when
    it refused a new (label, pixel) pair, so the loop ends. Filling holes only claims background (a nucleus inside
    its cytoplasm is not a hole) that the class has not refused.
    """
    out = labels.copy()
    refused: np.ndarray | None = None  # (labels, H, W): the labels that lost each pixel, made at the first loss
    changed = True
    while changed:
        changed = False
        for cls in sorted(settings):
            each = settings[cls]
            if not each.changes_pixels:
                continue
            mask = out == cls
            cleaned = clean_mask(mask, each)
            lost = mask & ~cleaned
            if lost.any():
                if refused is None:
                    count = probs.shape[0] if probs is not None else 0
                    refused = np.zeros((max(count, max(settings) + 1), *labels.shape), bool)
                changed |= bool((lost & ~refused[cls]).any())  # progress is a new refusal: the loop ends
                refused[cls, lost] = True
                out[lost] = _next_label(probs, refused, lost) if probs is not None and probs.shape[0] > 1 else 0
            claimed = cleaned & (out == 0)
            if refused is not None:
                claimed &= ~refused[cls]
            out[claimed] = cls
    return out


def _next_label(probs: np.ndarray, refused: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The most probable label not refused at the pixels `where` (probs (C, H, W), softmax); background always
    stays a choice, the label of last resort."""
    p = np.where(refused[: len(probs), where], -np.inf, probs[:, where])  # (C, M)
    p[0] = probs[0, where]
    return p.argmax(0).astype(np.int64)


def separate_instances(mask: np.ndarray, min_distance: int = 5, compactness: float = 0.0) -> np.ndarray:
    """Instance labels (H, W) int32 (0 = background, 1..n) of a boolean mask whose touching objects are split.

    Seeds are the maxima of the distance to the background at least `min_distance` apart (a plateau of maxima is one
    seed), grown by watershed on the negated distance inside the mask. A component that gets no seed stays whole.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import label as connected_components
    from skimage.segmentation import watershed

    mask = mask.astype(bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    components = connected_components(mask, connectivity=2)
    distance = ndimage.distance_transform_edt(mask)
    # beyond the image's longest side a distance changes nothing, but peak_local_max builds a (2d+1)**2 footprint:
    # min_distance = 1e9 was a MemoryError
    reach = min(max(int(min_distance), 1), max(mask.shape))
    peaks = peak_local_max(distance, min_distance=reach, labels=components, exclude_border=False)
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    markers, count = ndimage.label(seeds, structure=np.ones((3, 3)))  # neighbouring maxima: one seed
    unseeded = np.setdiff1d(np.unique(components[mask]), np.unique(components[seeds]))
    for offset, component in enumerate(unseeded, start=1):  # e.g. a 1-pixel-wide line: kept as one object
        markers[components == component] = count + offset
    instances = watershed(-distance, markers, mask=mask, compactness=compactness)
    return instances.astype(np.int32)


def instance_labels(labels: np.ndarray, settings: PostprocessSettings, num_labels: int) -> tuple[np.ndarray, list[int]]:
    """(instances (H, W) int32, class of each instance): every foreground class's objects numbered 1..n in one map,
    class by class. Objects are 8-connected components, or watershed-separated with `separate = "watershed"`."""
    from skimage.measure import label as connected_components

    instances = np.zeros(labels.shape, np.int32)
    classes: list[int] = []
    for cls in range(1, num_labels):
        each = settings.get(cls, OFF)
        mask = labels == cls
        if each.separate == "watershed":
            found = separate_instances(mask, each.min_distance, each.compactness)
        else:
            found = connected_components(mask, connectivity=2).astype(np.int32)
        count = int(found.max())
        instances[found > 0] = found[found > 0] + len(classes)
        classes += [cls] * count
    return instances, classes


def settings_from_config(cfg: Config,
                         chosen: Mapping[str, Mapping[str, Any]] | None = None) -> dict[int, ClassPostprocess]:
    """Label -> settings from [postprocess] (a scalar for every foreground class, or a value per class name);
    `chosen` (class name -> min_object_px / fill_holes / keep_largest, from postprocess.json) replaces those keys'
    values when `auto = True`. Classes left with nothing to do are left out."""
    section = cfg.postprocess
    out: dict[int, ClassPostprocess] = {}
    for cls, name in enumerate(cfg.label_names[1:], start=1):
        values = {key: section.for_class(key, name) for key in section.PER_CLASS}
        if chosen is not None and name in chosen:
            values.update({key: chosen[name][key] for key in AUTO_KEYS if key in chosen[name]})
        each = ClassPostprocess(**values)
        if each != OFF:
            out[cls] = each
    return out


CHOICE_FILE = "postprocess.json"  # in model_dir, beside best.pt: what `auto = True` chose on the validation split
# (or, for `train --folds`, on the out-of-fold predictions of all folds)


def read_choice(path: Path) -> dict[str, Any]:
    """postprocess.json as written after training: {"classes": {name: {"choice": {...}, "dice_before", ...}}}."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"[postprocess] auto = True: {path} not found; it is written at the end of `flexunet "
                          "train` (train again, or set auto = False and choose the keys yourself)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[postprocess] auto = True: {path}: unreadable ({exc})") from None
    return dict(record)


def choice_for_run(cfg: Config, model_dir: Path) -> tuple[Config, dict[int, ClassPostprocess]]:
    """What evaluate and infer apply: `cfg` and [postprocess] as set, or with `auto = True` the choice saved in
    model_dir's postprocess.json (read once): each class's postprocessing and, for a binary model, the threshold,
    set as [infer] threshold so that every LabelSpace built from the returned config labels pixels there."""
    if not cfg.postprocess.auto:
        return cfg, settings_from_config(cfg)
    record = read_choice(model_dir / CHOICE_FILE)
    threshold = record.get("threshold")  # absent in a choice written before thresholds were chosen
    if threshold and cfg.model.num_classes == 1:
        cfg = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"threshold": float(threshold["value"])})})
    chosen = {name: entry["choice"] for name, entry in record.get("classes", {}).items()}
    return cfg, settings_from_config(cfg, chosen)


def candidate_settings(object_areas: np.ndarray) -> list[ClassPostprocess]:
    """The grid `auto` tries for one class, simplest first (off, then one step, then combinations), so that a tie
    keeps the simpler choice. Sizes are fractions of the 5th percentile of the true objects' areas on validation
    (specks are far smaller than the smallest real objects), or a fixed set when validation has none."""
    small = float(np.percentile(object_areas, 5)) if len(object_areas) else 0.0
    sizes = sorted({max(int(round(f * small)), 2) for f in (0.1, 0.25, 0.5)}) if small >= 4 else [4, 16, 64]
    grid = [ClassPostprocess(min_object_px=s, fill_holes=f, keep_largest=k)
            for s in [0, *sizes] for f in (False, True) for k in (False, True)]
    # fewest steps first; among equals the mildest: a size limit before filling, filling before keeping one object
    return sorted(grid, key=lambda c: (int(c.min_object_px > 0) + c.fill_holes + c.keep_largest, c.keep_largest,
                                       c.fill_holes, c.min_object_px))


def pooled_dice(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], cls: int,
                ignore_index: int | None = None) -> float:
    """Dice of class `cls` from the pixels of all images together (as evaluate's dataset-level Dice); NaN if absent."""
    tp = fp = fn = 0
    for pred, truth in zip(preds, truths, strict=True):
        kept = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
        p, t = (pred == cls) & kept, (truth == cls) & kept
        tp += int((p & t).sum())
        fp += int((p & ~t).sum())
        fn += int((~p & t).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


AUTO_MIN_GAIN = 1e-4  # validation Dice a postprocessing choice must add over "off" to be kept


THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 19))  # 0.1 ... 0.9: what `auto` tries for a binary model


def choose_threshold(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], current: float,
                     ignore_index: int | None = None) -> dict[str, Any]:
    """The foreground probability (one of THRESHOLDS) with the highest pooled Dice of a binary model's
    probabilities `probs` (one (1, H, W) array per image) against `truths`; ties and gains under AUTO_MIN_GAIN keep
    `current`. {"value", "dice_before" (at `current`), "dice_after", "tried"}."""
    def dice_at(threshold: float) -> float:
        return pooled_dice([(p[0] > threshold).astype(np.uint8) for p in probs], truths, 1, ignore_index)

    before = dice_at(current)
    best, best_dice = current, before
    for threshold in THRESHOLDS:
        dice = dice_at(threshold)
        if dice > best_dice + 1e-9 and dice >= before + AUTO_MIN_GAIN:
            best, best_dice = threshold, dice
    return {"value": best, "dice_before": before, "dice_after": best_dice, "tried": len(THRESHOLDS)}


def choose_postprocess(labels: Sequence[np.ndarray], probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                       names: Sequence[str], ignore_index: int | None = None) -> dict[str, dict[str, Any]]:
    """For each foreground class (names[1:]), the candidate with the highest pooled validation Dice of that class
    (ties: the simplest, so off unless something adds at least AUTO_MIN_GAIN): class name -> {"choice",
    "dice_before", "dice_after", "tried"}. labels, probs, truths: one (H, W) / (C, H, W) / (H, W) array per
    validation image."""
    from skimage.measure import label as connected_components

    out: dict[str, dict[str, Any]] = {}
    for cls, name in enumerate(names[1:], start=1):
        areas = np.concatenate([np.bincount(connected_components(t == cls, connectivity=2).ravel())[1:]
                                for t in truths]) if truths else np.zeros(0)
        candidates = candidate_settings(areas)
        before = pooled_dice(labels, truths, cls, ignore_index)
        best, best_dice = OFF, before
        for each in candidates[1:]:
            cleaned = [postprocess_labels(lab, p, {cls: each}) for lab, p in zip(labels, probs, strict=True)]
            dice = pooled_dice(cleaned, truths, cls, ignore_index)
            # strictly better than the best so far (a tie keeps the simpler choice found first), and better than
            # off by AUTO_MIN_GAIN: a gain in the 8th decimal is noise, not a reason to change the masks
            if dice > best_dice + 1e-9 and dice >= before + AUTO_MIN_GAIN:
                best, best_dice = each, dice
        choice = {key: getattr(best, key) for key in AUTO_KEYS}
        out[name] = {"choice": choice, "described": best.describe(), "dice_before": before,
                     "dice_after": best_dice if not math.isnan(before) else before, "tried": len(candidates)}
    return out


def separation_notes(settings: PostprocessSettings, names: Sequence[str], predicted: Mapping[str, int]) -> list[str]:
    """A note for each class set to `separate = "watershed"` that has no predicted object at all (`predicted`:
    class name -> objects over the pass): the setting did nothing there."""
    return [f"[postprocess] separate = \"watershed\" for class '{names[c]}': no {names[c]} object was predicted, "
            "so there was nothing to separate"
            for c in sorted(settings) if settings[c].separate == "watershed" and not predicted.get(names[c], 0)]


def postprocess_hook(settings: PostprocessSettings) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The Predictor's `postprocess` callable (labels, probs) -> labels for these settings; None when no class has a
    pixel step, so the masks are exactly the thresholded ones."""
    if not any(each.changes_pixels for each in settings.values()):
        return None
    return partial(_apply, settings=settings)


def _apply(labels: np.ndarray, probs: np.ndarray, settings: PostprocessSettings) -> np.ndarray:
    return postprocess_labels(labels, probs, settings)
