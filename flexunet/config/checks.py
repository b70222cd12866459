"""Checks across keys and sections, made once the sections are valid on their own: [model] keys the chosen network does
not read, sizes that do not fit the network's depth or memory, settings that contradict each other."""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flexunet.config.aliases import (
    MODEL_KEY_SYNONYMS,
    canonical_model_name,
)
from flexunet.config.catalog import (
    ACTIVATIONS,
    COMMON_MODEL_KEYS,
    LEVEL_DROPOUT_MODELS,
    LOSS_NAMES,
    MODEL_KEYS,
    activation_key,
    canonical_loss_name,
)
from flexunet.config.schema import Config, ModelSection
from flexunet.config.section import Section


@dataclass(frozen=True)
class Location:
    """Where a value came from; prints as `pap.config [train] batch_size`."""

    file: str
    section: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.file} [{self.section}]" + (f" {self.key}" if self.key else "")


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(choices))}"


def unread_model_keys(section: Section, origins: Mapping[str, str], label: str) -> list[str]:
    """A note for each [model] key the user set, to other than its default, that the chosen model never reads.

    A key at its default changes nothing whichever model reads it; so config.resolved.ini, which lists every key,
    loads back without a note per unread key.
    """
    assert isinstance(section, ModelSection)
    name = canonical_model_name(section.model)
    if name not in MODEL_KEYS:  # an unknown model is reported as a problem
        return []
    reads = COMMON_MODEL_KEYS | MODEL_KEYS[name]
    notes = []
    fields = ModelSection.model_fields
    for key in (k.removeprefix("model.") for k in origins if k.startswith("model.")):
        if key not in reads and getattr(section, key) != fields[key].get_default(call_default_factory=True):
            synonym = MODEL_KEY_SYNONYMS.get(key)
            hint = f"; it reads {synonym}" if synonym in reads else ""
            notes.append(f"{Location(label, 'model', key)}: set, but model '{name}' does not read it{hint}")
    return notes


def _deepest_level(m: ModelSection) -> tuple[int, str]:
    """Index of the deepest level (its dropout is dropout_rate * index), and what sets it, for the message."""
    if canonical_model_name(m.model) == "sharp_unet":  # its filters (4 by default) plus a bottleneck, not num_layers
        deepest = len(m.filters) if m.filters else 4
        return deepest, f"{deepest + 1} levels ([model] filters)"
    return m.num_layers - 1, f"num_layers = {m.num_layers}"


def cross_problems(cfg: Config, label: str) -> list[str]:
    """Checks that involve several keys or a registry name."""
    from flexunet.metrics import SEED_METRICS

    problems = []
    m = cfg.model
    if canonical_model_name(m.model) not in MODEL_KEYS:
        problems.append(f"{Location(label, 'model', 'model')} = {m.model!r}: "
                        f"unknown model{suggest(m.model, list(MODEL_KEYS))}")
    if m.loss is not None and canonical_loss_name(m.loss) not in LOSS_NAMES:
        problems.append(f"{Location(label, 'model', 'loss')} = {m.loss!r}: "
                        f"unknown loss; choose one of {', '.join(sorted(LOSS_NAMES))}")
    for name in m.metrics:
        if name not in SEED_METRICS:
            problems.append(f"{Location(label, 'model', 'metrics')} = {name!r}: "
                            f"unknown metric{suggest(name, list(SEED_METRICS))}")
    for name in cfg.train.metrics:
        base = name.removeprefix("val_")
        if base not in SEED_METRICS and base != "loss":
            problems.append(f"{Location(label, 'train', 'metrics')} = {name!r}: "
                            f"unknown metric{suggest(base, list(SEED_METRICS))}")
    if activation_key(m.activation) not in ACTIVATIONS:
        problems.append(f"{Location(label, 'model', 'activation')} = {m.activation!r}: unknown activation; "
                        f"choose one of {', '.join(sorted(ACTIVATIONS))}")
    ignore = cfg.mask.ignore_index
    if m.num_classes > 1:
        bad = sorted({i for i in cfg.rgb_map.values() if i >= m.num_classes and i != ignore})
        if bad:
            problems.append(
                f"{Location(label, 'mask', 'rgb_map')}: class index {bad[0]} >= [model] num_classes = {m.num_classes}"
            )
    if cfg.mask.kind == "instances" and m.num_classes > 1:
        problems.append(f"{Location(label, 'mask', 'kind')} = 'instances': reads every object id as foreground, so "
                        f"num_classes must be 1 (is {m.num_classes})")
    names, labels = cfg.mask.class_names, max(m.num_classes, 2)
    if names is not None and len(names) != labels:
        problems.append(f"{Location(label, 'mask', 'class_names')} = {names!r}: "
                        f"{len(names)} names for {labels} labels; "
                        f"give one per label, background first ([model] num_classes = {m.num_classes})")
    if ignore is not None and ignore < max(m.num_classes, 2):
        problems.append(f"{Location(label, 'mask', 'ignore_index')} = {ignore}: must not be a class label; "
                        f"use a value >= {max(m.num_classes, 2)}, e.g. 255")
    known = cfg.label_names[1:]
    for key, named in cfg.postprocess.class_keys().items():
        for name in named:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append(f"{Location(label, 'postprocess', key)}: no class named {name!r}; {hint}"
                                f"the classes are {', '.join(known)} ([mask] class_names)")
    deepest, levels = _deepest_level(cfg.model)
    if canonical_model_name(m.model) in LEVEL_DROPOUT_MODELS and m.dropout_rate * deepest >= 1:
        problems.append(f"{Location(label, 'model', 'dropout_rate')} = {m.dropout_rate}: "
                        f"level i drops dropout_rate * i, "
                        f"so with {levels} it must be < {1 / deepest:.4g}")
    return problems + size_problems(cfg, label)


MAX_LEVEL_FILTERS = 8192  # one 3x3 convolution at this width holds 9 * 8192**2 weights, 2.4 GB in float32


def _widest_level(m: ModelSection) -> tuple[int, str, str] | None:
    """(filters of the widest level, the key that sets it, how) for the models whose width [model] keys set."""
    name = canonical_model_name(m.model)
    if name == "sharp_unet" and m.filters:
        return max(m.filters), "filters", "the widest level"
    if name == "trans_unet" and m.filter_num:
        return max(m.filter_num), "filter_num", "the widest level"
    if "base_filters" not in MODEL_KEYS.get(name, frozenset()):
        return None
    levels = 4 if name in ("sharp_unet", "trans_unet") else m.num_layers
    return m.base_filters * 2 ** (levels - 1), "base_filters", f"the deepest of {levels} levels (base_filters * 2**i)"


def size_problems(cfg: Config, label: str) -> list[str]:
    """Upper bounds on sizes: a model or an image setting that would exhaust memory before anything is learned
    (issue 27: huge base_filters, image sizes and watershed distances were a MemoryError or an unbounded run)."""
    problems = []
    m, limit, largest = cfg.model, cfg.image.pixel_limit(), cfg.image.pixel_limit(tiled=True)
    widest = _widest_level(m)
    if widest is not None and widest[0] > MAX_LEVEL_FILTERS:
        filters, key, where = widest
        problems.append(f"{Location(label, 'model', key)} = {getattr(m, key)!r}: {where} would have {filters:,} "
                        f"filters, and one 3x3 convolution there {9 * filters**2 * 4 / 1e9:,.0f} GB of weights; "
                        f"at most {MAX_LEVEL_FILTERS} filters per level")
    pixels = m.image_width * m.image_height
    if pixels > limit:
        batch_gb = cfg.train.batch_size * m.image_channels * pixels * 4 / 1e9
        problems.append(f"{Location(label, 'model', 'image_width')} x image_height = {m.image_width} x "
                        f"{m.image_height}: {pixels:,} pixels is over [image] max_pixels = {limit:,}, the largest "
                        f"image read (one input batch alone would take {batch_gb:,.1f} GB)")
    side = math.isqrt(largest)
    split = cfg.tiledinfer.split_size
    if split is not None and split > side:  # each image is padded up to one tile: 10**6 was a MemoryError
        problems.append(f"{Location(label, 'tiledinfer', 'split_size')} = {split}: must be <= {side:,}, the side of "
                        f"the largest square image [image] max_pixels admits ({largest:,} pixels with infer --tiled)")
    post = cfg.postprocess
    for key, bound, why in (
        ("min_distance", side, f"the side of the largest square image [image] max_pixels admits ({largest:,} pixels "
                               "with infer --tiled): no two object centres are further apart"),
        ("min_object_px", largest, "the most pixels an image may have ([image] max_pixels with infer --tiled)"),
    ):
        value = getattr(post, key)
        if any(v > bound for v in (value.values() if isinstance(value, dict) else [value])):
            problems.append(f"{Location(label, 'postprocess', key)} = {value!r}: must be <= {bound:,}, {why}")
    return problems
