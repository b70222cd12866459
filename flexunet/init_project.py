"""`flexunet init`: from a folder of images and masks to a commented config that trains the best model this machine
can train in the time given, printing every decision with its reason.

The data's fingerprint (`prepare.survey`) gives the classes, the mask decoding, the input size and the source groups;
with a budget, `train.plan` times the candidate networks here and sizes the run to the deadline. A grouped split file
is written beside the config when the folder has no clean split of its own; nothing is ever written in the data
folder.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flexunet.config.schema import duration_seconds
from flexunet.console import format_duration, plural, say
from flexunet.data.dataset import SegmentationDataset
from flexunet.data.split_file import write_split_file
from flexunet.errors import ConfigError, DataError
from flexunet.files import Protected, atomic_write_text, check_outputs, guarded
from flexunet.prepare.split import SPLIT_NAMES, assign_groups
from flexunet.prepare.survey import Survey, image_and_mask_patterns, source_groups, survey
from flexunet.runs.device import choose_device
from flexunet.train.plan import (
    CPU_CANDIDATES,
    GPU_CANDIDATES,
    Plan,
    batch_for,
    choose,
    load_seconds,
    loss_for,
    time_candidate,
)

SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
MEDIAN_OBJECT_PX = 16  # the typical object should span at least this many pixels at the input size
SMALL_OBJECT_PX = 6  # ... and the smallest tenth at least this many
KEEP_BELOW = 256  # images up to this size keep it


@dataclass(frozen=True)
class InitResult:
    config: Path
    split_file: Path | None
    plan: Plan | None
    lines: tuple[str, ...]


def input_size(found: Survey) -> tuple[tuple[int, int], str]:
    """The smallest input size (multiple of 32, 64..512) at which objects keep MEDIAN_OBJECT_PX / SMALL_OBJECT_PX,
    and never above the images' own size; its aspect follows the median image."""
    width, height = found.typical_size
    long_side = max(width, height)
    cap = max(64, min(512, long_side) // 32 * 32)
    if found.objects:
        median = min(o.median for o in found.objects.values())
        small = min(o.small for o in found.objects.values())
        need = max(MEDIAN_OBJECT_PX / median, SMALL_OBJECT_PX / max(small, 1.0)) * long_side
    else:
        median = small = 0.0
        need = long_side
    # never below the originals up to 256 px: shrinking small images loses boundary pixels the evaluation counts
    side = min(cap, max(next((s for s in SIZES if s >= min(need, cap)), cap), min(cap, KEEP_BELOW)))
    scale = side / long_side
    other = max(64, round(min(width, height) * scale / 32) * 32)
    size = (side, other) if width >= height else (other, side)
    if side == min(cap, KEEP_BELOW) and need < side:
        why = (f"input size {size[0]}x{size[1]}: the originals' size ({width}x{height} px) up to {KEEP_BELOW}; "
               f"median object diameter {median * scale:.0f} px there")
    elif found.objects:
        why = (f"input size {size[0]}x{size[1]}: median object diameter {median * scale:.0f} px "
               f"(smallest tenth {small * scale:.0f} px) at that size, {width}x{height} px originals")
    else:
        why = f"input size {size[0]}x{size[1]}: no objects in the sampled masks, {width}x{height} px originals"
    return size, why


def _count(n: int, word: str) -> str:
    return f"{n:,} {plural(n, word)}"


def _rel(path: Path, base: Path) -> str:
    """Relative to the config's folder when the path lies under it (paths in a config are read that way), else
    absolute: "../../data/x" is harder to check than "/data/x"."""
    text = os.path.relpath(path, base)
    return str(path) if text.startswith("..") else f"./{text}"


def grouped_rows(found: Survey, seed: int, groups: dict[str, str]) -> tuple[list[tuple[str, str, str]], str]:
    """(stem, group, split) rows of an 80/10/10 split by source group (`flexunet split`'s assignment), and its line."""
    if len({Path(image).stem for image in groups}) < len(groups):
        raise DataError(f"{found.root}: the same file name is in two sub-folders; a split list names files by their "
                        "name, so make names unique (or keep train/valid/test folders without shared sources)")
    sizes = Counter(groups.values())
    if len(sizes) < 3:
        raise DataError(f"{found.root}: {_count(len(sizes), 'source')}; a train/valid/test split needs at least 3")
    where = assign_groups(dict(sizes), (0.8, 0.1, 0.1), seed)
    rows = [(Path(image).stem, group, SPLIT_NAMES[where[group]]) for image, group in groups.items()]
    per = Counter(split for _, _, split in rows)
    return rows, (f"split {per['train']}/{per['valid']}/{per['test']} pairs (train/valid/test) by "
                  f"{_count(len(sizes), 'source')}: the copies of a source stay together")


def _leaking_sources(found: Survey, groups: dict[str, str]) -> int:
    splits_of: dict[str, set[str]] = {}
    for image, split in found.given_split.items():
        splits_of.setdefault(groups[image], set()).add(split)
    return sum(len(s) > 1 for s in splits_of.values())


def _commented(key_value: str, comment: str) -> list[str]:
    """A `; comment` line above its key: the seed's INI reader takes text after a value as part of the value."""
    return [f"; {comment}", key_value]


def config_text(found: Survey, size: tuple[int, int], plan: Plan | None, paths: dict[str, str],
                split_file: str | None, name: str) -> str:
    """The commented seed-format INI."""
    binary = found.num_classes == 1
    model: dict[str, object] = dict(plan.timing.candidate.model) if plan else {"model": "flexunet",
                                                                              "base_filters": 16, "num_layers": 6}
    lr = plan.timing.candidate.learning_rate if plan else 1e-3
    lines = [f"; written by flexunet init for {found.root}: edit freely (docs/config.md explains each "
             "key); `flexunet init` printed why each value was chosen",
             "", "[model]"]
    lines += [f"{k} = {v!r}" for k, v in model.items()]
    lines += [f"image_width = {size[0]}", f"image_height = {size[1]}", f"image_channels = {found.channels}",
              f"num_classes = {found.num_classes}", f"learning_rate = {lr:g}",
              f'loss = "{loss_for(found.num_classes)}"',
              f'metrics = ["{"iou_coef" if binary else "dice_coef_multiclass"}"]']
    if plan and plan.augment:
        lines += _commented("generator = True", f"augmentation: the budget passes over the training images "
                                                f"~{plan.passes:.0f} times")
    lines += ["", "[train]"]
    if plan:
        lines += _commented(f'time_budget = "{format_duration(plan.budget_s).replace(" ", "")}"',
                            "training ends by then, its learning rate annealed to the deadline (warm-up, cosine)")
        lines += _commented("epochs = 10000", "an upper bound: the budget ends training")
        lines += _commented("patience = 0", "early stopping off: the schedule runs to the deadline")
        lines.append(f"batch_size = {plan.batch_size}")
        if plan.steps_per_epoch:
            lines += _commented(f"steps_per_epoch = {plan.steps_per_epoch}", "an epoch (and a validation) every "
                                f"{plan.steps_per_epoch * plan.batch_size} images")
        if plan.validation_steps:
            lines += _commented(f"validation_steps = {plan.validation_steps}",
                                "validation kept to a tenth of each epoch's time")
        lines += _commented("epoch_change_infer = False", "per-epoch preview masks cost budget; True to see them")
    else:
        lines += ["epochs = 100", "patience = 10", "batch_size = 4"]
    lines += ["seed = 137", f'model_dir = "./runs/{name}/models"', f'eval_dir = "./runs/{name}/eval"',
              f'epoch_change_infer_dir = "./runs/{name}/epoch_change_infer"']
    for section in ("train", "valid", "test"):
        if section != "train":
            lines += ["", f"[{section}]"]
        lines += [f'images_dir = "{paths[section + "_images"]}"', f'masks_dir = "{paths[section + "_masks"]}"']
        if split_file:
            lines.append(f'split_file = "{split_file}"')
    if plan and plan.validation_steps:
        lines += ["", "[eval]", f"batch_size = {plan.batch_size}"]
    lines += ["", "[mask]"]
    if found.mask_suffix:
        lines.append(f'mask_suffix = "{found.mask_suffix}"')
    if found.mask_kind == "instances":
        lines += _commented('kind = "instances"', "every object id > 0 is foreground")
    elif found.rgb_map:
        lines.append(f"rgb_map = {found.rgb_map!r}")
    elif binary:
        lines.append("threshold = 127")
    lines.append(f"class_names = {found.class_names!r}")
    lines += ["", "[infer]", f'images_dir = "{paths["test_images"]}"', f'output_dir = "./runs/{name}/infer"', ""]
    return "\n".join(lines)


def init_project(data: Path, out: Path, budget: str | None = None, device: str | None = None, seed: int = 137,
                 log: Callable[[str], None] = say) -> InitResult:
    """Survey `data`, plan for `budget` (e.g. "20m") on `device`, write `out` (and a split file beside it)."""
    data, out = Path(data), Path(out)
    budget_s = None
    if budget is not None:
        try:
            budget_s = duration_seconds(budget)
        except ValueError as exc:
            raise ConfigError(f"--budget {exc}") from None
    if out.suffix.lower() not in (".config", ".ini", ".cfg"):
        raise ConfigError(f"--out {out}: name the config file, e.g. my.config")
    if out.exists():
        raise ConfigError(f"{out}: already exists; init writes a new config (choose another --out)")
    lines: list[str] = []

    def tell(text: str) -> None:
        lines.append(text)
        log(text)

    with guarded([Protected(data, "the dataset init examines")]):
        found = survey(data)
        tell(f"{len(found.pairs)} image/mask pairs in {data}")
        for reason in found.reasons:
            tell(reason)
        fractions = ", ".join(f"{n} {f:.1%}" for n, f in zip(found.class_names, found.class_fractions, strict=False))
        tell(f"classes (pixel share in {min(len(found.pairs), 64)} sampled masks): {fractions}")
        size, why = input_size(found)
        tell(why)
        split_path = out.with_suffix(".split.csv")
        groups = source_groups(found)
        copies = len(found.pairs) - len(set(groups.values()))
        tell(f"{_count(len(set(groups.values())), 'source')} ({_count(copies, 'image')} are copies of another: "
             "name prefixes and near-copies by the doctor's fingerprints)")
        named = set(found.given_split.values())
        leaking = _leaking_sources(found, groups) if named else 0
        keep_given = {"train", "valid"} <= named and not leaking
        check_outputs([out] if keep_given else [out, split_path])
        base = out.resolve().parent
        split_rel, rows = None, list[tuple[str, str, str]]()
        if keep_given:
            tell("split: the train/valid/test folders, kept (no source in two of them)")
            paths = {f"{s}_{k}": _rel(data / (s if s in named else "valid") / k, base)
                     for s in ("train", "valid", "test") for k in ("images", "masks")}
            counts = Counter(found.given_split.values())
        else:
            if leaking:
                tell(f"the given train/valid/test folders share {_count(leaking, 'source')} (their copies sit in "
                     "two splits): a grouped split over all pairs instead")
            rows, text = grouped_rows(found, seed, groups)
            tell(f"{text} -> {split_path.name}")
            images, masks = image_and_mask_patterns(found)
            split_rel = _rel(split_path.resolve(), base)
            paths = {f"{s}_{k}": _rel(Path(images if k == "images" else masks).resolve(), base)
                     for s in ("train", "valid", "test") for k in ("images", "masks")}
            counts = Counter(split for _, _, split in rows)
        plan = None
        if budget_s is not None:
            plan = _plan(found, size, budget_s, device, counts["train"], max(1, counts["valid"]), tell)
        text = config_text(found, size, plan, paths, split_rel, out.stem)
        if rows:  # only now: a refused budget leaves nothing behind
            write_split_file(split_path, rows)
        atomic_write_text(out, text)
        tell(f"wrote {out}{f' and {split_path.name}' if rows else ''}; train it with: flexunet train {out}")
    return InitResult(out, None if keep_given else split_path, plan, tuple(lines))


def _plan(found: Survey, size: tuple[int, int], budget_s: float, device: str | None, train_images: int,
          valid_images: int, tell: Callable[[str], None]) -> Plan:
    torch_device = choose_device(device)
    candidates = GPU_CANDIDATES if torch_device.type == "cuda" else CPU_CANDIDATES
    batch = batch_for(torch_device, size)
    load_s = load_seconds(SegmentationDataset(list(found.pairs[:6]), *size, found.channels, found.decoding))
    tell(f"timing {len(candidates)} candidate {plural(len(candidates), 'network')} on {torch_device} at "
         f"{size[0]}x{size[1]}, batch {batch} (a few training steps each)")
    timings = [time_candidate(c, size, found.channels, found.num_classes, batch, torch_device, load_s)
               for c in candidates]
    plan = choose(timings, budget_s, batch, train_images, valid_images)
    for reason in plan.reasons:
        tell(reason)
    t = plan.timing
    tell(f"model {t.candidate.label} ({t.parameters:,} parameters), lr {t.candidate.learning_rate:g} with warm-up "
         f"and cosine to the deadline, {loss_for(found.num_classes)}, batch {plan.batch_size}: the largest network "
         "that sees enough images in the budget")
    every = f"{plan.steps_per_epoch * plan.batch_size} images" if plan.steps_per_epoch else "all training images"
    valid = f"{plan.validation_steps} batches" if plan.validation_steps else "all validation images"
    tell(f"predicted: ~{plan.images_seen:,} training images in ~{plan.epochs} epochs of {every}, validating on "
         f"{valid} after each; training ends by {format_duration(budget_s)}")
    tell("augmentation on: the budget passes over the training images more than 4 times" if plan.augment else
         "augmentation off: the budget passes over the training images at most 4 times")
    return plan
