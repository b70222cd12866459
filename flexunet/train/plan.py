"""A training plan for a time budget: a few timed training steps of each candidate network on this machine, then
the largest one that still sees enough images by the deadline, with epochs and validation sized to the budget.

What "enough" means comes from the benchmarks (benchmarks/results/model_zoo.md, peers.md): on one CPU thread at
600 s the 7.8 M FlexUNet (lr 1e-3, bce_dice_loss) saw 5,600 images and led every peer, while the 31 M seed UNet and
the 24 M smp U-Net saw 2,400-3,200 and trailed; a network that cannot see a few thousand images loses to a smaller
one that can. The numbers here are the rule's thresholds, and `benchmarks/budget.py` measures whether it holds.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flexunet.config.load import config_from_dict
from flexunet.console import Bar, format_duration
from flexunet.data.dataset import SegmentationDataset
from flexunet.errors import DataError
from flexunet.losses import build_loss
from flexunet.models import build_model
from flexunet.runs.distributed import DistContext
from flexunet.train.step import make_optimizer, prepare_model, step_settings, train_one_epoch

VALIDATION_SHARE = 0.1  # of each epoch's time, at most, spent validating
VALIDATIONS = 15  # epochs (validations) a budget is cut into, when the data allows
MIN_STEPS = 50  # the shortest useful run: this many training steps and one validation
SETUP_S = 10.0  # building data and model, the first-step warm-up, the last save: not training time


@dataclass(frozen=True)
class Candidate:
    """A network `init` may choose: its [model] keys and how many training images it needs to see to beat the
    smaller candidates (0 for the smallest)."""

    label: str
    model: Mapping[str, object]
    needs_images: int
    learning_rate: float = 1e-3


CPU_CANDIDATES = (
    Candidate("FlexUNet, base_filters 8, 5 levels", {"model": "flexunet", "base_filters": 8, "num_layers": 5}, 0),
    Candidate("FlexUNet, base_filters 16, 6 levels", {"model": "flexunet", "base_filters": 16, "num_layers": 6}, 3000),
)
GPU_CANDIDATES = (
    *CPU_CANDIDATES,
    Candidate("smp FPN, resnet34 encoder", {"model": "fpn", "encoder": "resnet34", "encoder_weights": None}, 40_000),
)


@dataclass(frozen=True)
class Timing:
    """Seconds per image of one candidate here: a training step (loading included) and a validation forward."""

    candidate: Candidate
    train_s: float
    valid_s: float
    parameters: int


@dataclass(frozen=True)
class Plan:
    """What `init` writes into [model] and [train] for a budget, with the prediction it rests on."""

    timing: Timing
    batch_size: int
    steps_per_epoch: int | None  # None: every training pair each epoch
    validation_steps: int | None  # None: all validation pairs
    epochs: int  # predicted epochs in the budget
    images_seen: int  # predicted
    augment: bool
    passes: float  # predicted passes over the training images
    budget_s: float
    reasons: tuple[str, ...]


def _config(candidate: Candidate, size: tuple[int, int], channels: int, num_classes: int):
    model = dict(candidate.model) | {"image_width": size[0], "image_height": size[1], "image_channels": channels,
                                     "num_classes": num_classes, "learning_rate": candidate.learning_rate,
                                     "loss": loss_for(num_classes)}
    return config_from_dict({"model": model})


def loss_for(num_classes: int) -> str:
    return "bce_dice_loss" if num_classes == 1 else "dice_ce_loss"


def load_seconds(dataset: SegmentationDataset, samples: int = 6) -> float:
    """Seconds the training loader spends on one pair (read, decode, resize: `SegmentationDataset.load`), the
    median over the first `samples` pairs."""
    times = []
    for index in range(min(samples, len(dataset))):
        began = time.perf_counter()
        dataset.load(index)
        times.append(time.perf_counter() - began)
    return statistics.median(times) if times else 0.0


def time_candidate(candidate: Candidate, size: tuple[int, int], channels: int, num_classes: int, batch: int,
                   device: torch.device, load_s: float, seconds: float = 4.0) -> Timing:
    """Time training steps of `candidate` as `fit` runs them (same optimiser, clipping, autocast), on random data
    of the real shape: one warm-up step, then steps until `seconds` have passed (at least 2, at most 10)."""
    cfg = _config(candidate, size, channels, num_classes)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    step = step_settings(cfg, device, quiet=True)
    prepare_model(model, step, DistContext())
    loss_fn = build_loss(cfg.model)
    optim = make_optimizer(model, cfg.model)
    images = torch.randint(0, 256, (batch, channels, size[1], size[0]), dtype=torch.uint8)
    labels = torch.randint(0, max(num_classes, 2) if num_classes > 1 else 2, (batch, size[1], size[0]),
                           dtype=torch.uint8)
    bar = Bar(None, "", None)
    generator = torch.Generator()
    train_one_epoch(model, loss_fn, [(images, labels)], optim, step, [], None, generator, None, bar)  # warm-up
    steps: list[float] = []
    while len(steps) < 2 or (sum(steps) < seconds and len(steps) < 10):
        began = time.perf_counter()
        train_one_epoch(model, loss_fn, [(images, labels)], optim, step, [], None, generator, None, bar)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps.append(time.perf_counter() - began)
    model.eval()
    forwards = []
    with torch.no_grad():
        x = images.to(device).float().div_(255)
        for _ in range(3):
            began = time.perf_counter()
            with torch.autocast(device.type, dtype=step.amp, enabled=step.amp is not None):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            forwards.append(time.perf_counter() - began)
    overlap = 4 if device.type == "cuda" else 1  # loader workers read while the GPU computes
    train_s = statistics.median(steps) / batch + load_s / overlap
    valid_s = min(forwards[1:]) / batch + load_s / overlap
    return Timing(candidate, train_s, valid_s, sum(p.numel() for p in model.parameters()))


def batch_for(device: torch.device, size: tuple[int, int]) -> int:
    """4 on the CPU (the documented recipe); on a GPU 16, or 8 above 256 x 256 pixels."""
    if device.type != "cuda":
        return 4
    return 16 if size[0] * size[1] <= 256 * 256 else 8


def shortest_budget(timing: Timing, batch: int, valid_images: int) -> float:
    """The least budget that trains MIN_STEPS steps and validates once with this candidate here."""
    return SETUP_S + MIN_STEPS * batch * timing.train_s + max(batch, min(valid_images, 64)) * timing.valid_s


def choose(timings: list[Timing], budget_s: float, batch: int, train_images: int, valid_images: int) -> Plan:
    """The largest candidate whose predicted images seen reach its `needs_images` (the smallest always qualifies),
    with epochs, validation and augmentation sized to the budget. DataError when the budget is too short."""
    smallest = min(timings, key=lambda t: t.train_s)
    floor = shortest_budget(smallest, batch, valid_images)
    if budget_s < floor:
        raise DataError(f"time budget {format_duration(budget_s)} is too short to train here: the smallest network "
                        f"needs {format_duration(floor)} for {MIN_STEPS} steps and one validation; give --budget "
                        f"{math.ceil(floor / 60)}m or more")
    usable = (budget_s - SETUP_S) * (1 - VALIDATION_SHARE)
    reasons = []
    chosen = smallest
    for timing in sorted(timings, key=lambda t: t.candidate.needs_images):
        seen = usable / timing.train_s
        ok = seen >= timing.candidate.needs_images
        short = "" if ok else f", under the {timing.candidate.needs_images:,} it needs"
        reasons.append(f"{timing.candidate.label}: {1 / timing.train_s:.1f} training images/s here -> "
                       f"~{seen:,.0f} images in the budget{short}")
        if ok:
            chosen = timing
    seen = int(usable / chosen.train_s)
    steps_total = max(1, seen // batch)
    epochs = max(1, min(VALIDATIONS, steps_total // 20))
    per_epoch = max(1, steps_total // epochs)
    steps_per_epoch = None if abs(per_epoch * batch - train_images) <= batch else per_epoch
    if steps_per_epoch is None:
        epochs = max(1, steps_total * batch // max(train_images, 1))
    epoch_s = per_epoch * batch * chosen.train_s
    affordable = int(VALIDATION_SHARE * epoch_s / chosen.valid_s)
    validation_steps = None if affordable >= valid_images else max(1, affordable // batch)
    passes = seen / max(train_images, 1)
    augment = passes > 4
    return Plan(chosen, batch, steps_per_epoch, validation_steps, epochs, seen, augment, passes, budget_s,
                tuple(reasons))
