"""The training loop: for each epoch train, validate, update early stopping and the LR schedule, save, log."""
from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, Subset

from flexunet.config.schema import Config, TrainSection
from flexunet.console import Bar, format_duration, note, run_eta, say
from flexunet.data.dataset import SegmentationDataset, SplitDatasets
from flexunet.errors import DataError, TrainingError
from flexunet.labels import LabelSpace
from flexunet.losses import LossFn, probs_and_targets
from flexunet.metrics import SEED_METRICS, Counts, confusion_counts, dice, iou, nanmean
from flexunet.predict import predictor_from_config
from flexunet.runs.checkpoint import (
    checkpoint_config,
    first_nonfinite,
    kept_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from flexunet.runs.device import amp_dtype
from flexunet.runs.rundir import RunDir
from flexunet.train.budget import BudgetSchedule, Deadline, EpochClock, RunClock, StepChecks
from flexunet.train.distributed import (
    DistContext,
    DrawnShardSampler,
    all_reduce_sum,
    any_rank,
    gather_batch,
    gather_uneven,
    max_over_ranks,
    per_rank_batch,
)
from flexunet.train.history import History
from flexunet.train.param_groups import apply_encoder_schedule, check_freezing_supported, parameter_groups
from flexunet.train.resume import apply_to_optimizer, changed_settings, describe
from flexunet.train.schedule import EarlyStopping, PlateauReducer
from flexunet.train.tensorboard import open_board

Augment = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class StepSettings:
    """How one optimisation step runs on this device."""

    device: torch.device
    clipvalue: float | None
    amp: torch.dtype | None
    channels_last: bool


@dataclass(frozen=True)
class FitResult:
    """Summary of a finished (or early-stopped) training run."""

    run: RunDir
    epochs_run: int
    best_epoch: int  # numbered from 1, as in every file and message; 0 when no epoch improved
    best_value: float
    stopped_early: bool
    history: list[dict[str, float]]
    stopped_by: str = "epochs"  # or "early_stopping", "on_epoch_end", "break_training", "time_budget"
    seconds: float = 0.0  # training time of the whole run, resumed parts included
    budget_s: float | None = None  # [train] time_budget in seconds, when set


def make_optimizer(model: nn.Module, cfg: Config) -> Optimizer:
    """Adam or AdamW with Keras' epsilon; the fused kernel where this PyTorch has it (3x faster step on CPU)."""
    m = cfg.model
    params = parameter_groups(model, m)  # the encoder's own group: encoder_lr_scale, freezing (param_groups.py)
    kwargs: dict = {"lr": m.learning_rate, "eps": 1e-7}
    cls = torch.optim.AdamW if m.optimizer.lower() == "adamw" else torch.optim.Adam
    if cls is torch.optim.AdamW:
        kwargs["weight_decay"] = 0.004 if m.weight_decay is None else m.weight_decay
    elif m.weight_decay:
        kwargs["weight_decay"] = m.weight_decay
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def step_settings(cfg: Config, device: torch.device, quiet: bool = False) -> StepSettings:
    """[model] clipvalue and [train] amp / cpu_bf16 / channels_last resolved for `device`; a note (unless `quiet`)
    when cpu_bf16 is asked for but cannot be used."""
    t = cfg.train
    step = StepSettings(device, cfg.model.clipvalue or None, amp_dtype(device, t.cpu_bf16) if t.amp else None,
                        t.channels_last if t.channels_last is not None else device.type == "cuda")
    if t.cpu_bf16 and device.type == "cpu" and step.amp is None and not quiet:
        why = "[train] amp = False turns it off" if not t.amp else "this CPU has no native bf16 (avx512_bf16 / AMX)"
        note(f"{t.where('cpu_bf16')}: {why}; training in fp32")
    return step


def train_one_epoch(model: nn.Module, loss_fn: LossFn, loader: Iterable[tuple[Tensor, Tensor]], optim: Optimizer,
                    step: StepSettings,
                    seed_metrics: list[str], augment: Augment | None, generator: torch.Generator,
                    scaler: torch.amp.GradScaler | None, bar: Bar,
                    dist_ctx: DistContext = DistContext(),
                    on_step: Callable[[], bool] | None = None) -> dict[str, float]:
    """One pass over `loader`; returns the mean loss and the running means of the seed metrics (as Keras reports),
    averaged over all processes, and the images this process trained on. `on_step()` runs after every step (the
    time budget's learning rate, a break_training file); True ends the pass there."""
    model.train()
    totals = dict.fromkeys(["loss", *seed_metrics], 0.0)
    batches = images_seen = 0
    for images, labels in loader:
        x = to_input_batch(images, step)
        y = labels.to(step.device, non_blocking=True).long()
        if augment is not None:
            x, y = augment(x, y, generator)
        with torch.autocast(step.device.type, dtype=step.amp, enabled=step.amp is not None):
            logits = model(x)
        logits, y = gather_batch(logits.float(), dist_ctx), gather_batch(y, dist_ctx)  # the global batch, see there
        loss = loss_fn(logits, y)
        if any_rank(not torch.isfinite(loss).item(), dist_ctx, step.device):
            raise TrainingError(f"loss became {loss.item()} at batch {batches + 1}; lower [model] learning_rate or "
                                "check the masks; best.pt and last.pt stay as the last finished epoch wrote them")
        optim.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optim)
        else:
            loss.backward()
        if step.clipvalue:
            clip_gradients(model, step.clipvalue)
        if scaler is not None:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        batches += 1
        totals["loss"] += loss.item()
        if seed_metrics:
            with torch.no_grad():
                probs, target = probs_and_targets(logits.detach().float(), y)
                for name in seed_metrics:
                    totals[name] += SEED_METRICS[name](target, probs).item()
        bar.advance(len(images))
        bar.update(f"loss {totals['loss'] / batches:.4f}")
        images_seen += len(images)
        if on_step is not None and on_step():
            break
    means = torch.tensor([v / max(batches, 1) for v in totals.values()], dtype=torch.float64, device=step.device)
    means = all_reduce_sum(means, dist_ctx) / dist_ctx.world_size  # every process ran the same number of batches
    return dict(zip(totals, means.tolist(), strict=True)) | {"images": float(images_seen * dist_ctx.world_size)}


def clip_gradients(model: nn.Module, value: float) -> None:
    """Keras' clipvalue: clamp every gradient element to [-value, value] in place, one pass per tensor
    (clip_grad_value_ makes two passes, clamp_min_ then clamp_max_: half the memory traffic, ~2% of a CPU step)."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.clamp_(-value, value)


def to_input_batch(images: Tensor, step: StepSettings) -> Tensor:
    """uint8 (N, C, H, W) from the loader -> float in [0, 1] on the device (converted there, not in the workers)."""
    x = images.to(step.device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if step.channels_last else x


@torch.no_grad()
def validate(model: nn.Module, loss_fn: LossFn, loader: DataLoader, space: LabelSpace, step: StepSettings,
             seed_metrics: list[str], max_batches: int | None = None,
             dist_ctx: DistContext = DistContext(), bar: Bar | None = None) -> dict[str, float]:
    """Validation loss, seed metrics, and per-class Dice/IoU over the whole set (background excluded), on labels
    taken by `space` as evaluation and infer take them (binary models: the [infer] threshold).

    Under torchrun each process predicts a disjoint shard of every batch; the loss and the seed metrics are taken
    on the gathered batch (batch-global, as in one process) and the confusion counts are summed over processes.
    """
    model.eval()
    num_labels = space.num_labels
    totals = dict.fromkeys(["loss", *seed_metrics], 0.0)
    tp = fp = fn = torch.zeros(num_labels, dtype=torch.float64)
    steps = max_over_ranks(len(loader), dist_ctx, step.device)  # the last batch may leave a process without a share
    steps = steps if max_batches is None else min(steps, max_batches)
    shares = iter(loader)
    for _ in range(steps):
        share = next(shares, None)  # None: this process's shard has no batch left
        logits: Tensor | None = None
        y: Tensor | None = None
        if share is not None:
            images, labels = share
            x = to_input_batch(images, step)
            y = labels.to(step.device).long()
            with torch.autocast(step.device.type, dtype=step.amp, enabled=step.amp is not None):
                logits = model(x).float()
            counts = confusion_counts(space.labels(space.probabilities(logits)), y, num_labels).total()
            tp, fp, fn = tp + counts.tp.cpu(), fp + counts.fp.cpu(), fn + counts.fn.cpu()
            if bar is not None:
                bar.advance(len(images))
        logits, y = gather_uneven(logits, dist_ctx, step.device), gather_uneven(y, dist_ctx, step.device)
        assert logits is not None and y is not None  # steps <= the longest shard: some process had a batch
        totals["loss"] += loss_fn(logits, y).item()
        if seed_metrics:
            probs, target = probs_and_targets(logits, y)
            for name in seed_metrics:
                totals[name] += SEED_METRICS[name](target, probs).item()
    packed = torch.cat([torch.tensor([*totals.values(), steps], dtype=torch.float64), tp, fp, fn]).to(step.device)
    packed = all_reduce_sum(packed, dist_ctx).cpu()
    k = len(totals)
    batches = int(packed[k].item())
    out = {name: float(v) / max(batches, 1) for name, v in zip(totals, packed[:k], strict=True)}
    tp, fp, fn = packed[k + 1 :].reshape(3, num_labels)
    c = Counts(tp[1:], fp[1:], fn[1:])  # background excluded
    per_dice, per_iou = dice(c), iou(c)
    out["dice"], out["iou"] = float(nanmean(per_dice)), float(nanmean(per_iou))
    for i, (d, j) in enumerate(zip(per_dice.tolist(), per_iou.tolist(), strict=True), start=1):
        out[f"dice_{i}"], out[f"iou_{i}"] = d, j
    return out


def make_loader(dataset: SegmentationDataset, batch_size: int, shuffle: bool, device: torch.device,
                num_workers: int | None, generator: torch.Generator | None = None,
                num_samples: int | None = None, dist_ctx: DistContext = DistContext(), seed: int = 0) -> DataLoader:
    """Streams pairs from disk. `num_samples` draws that many training samples per epoch (steps_per_epoch).

    Under torchrun, training uses a DistributedSampler (the same permutation as one process, seeded by seed + epoch,
    so the global batches are the same) and validation a disjoint shard per process.
    """
    workers = (4 if device.type == "cuda" else 0) if num_workers is None else num_workers
    sampler: Sampler | None = None
    source: Dataset = dataset
    if dist_ctx.enabled and shuffle and num_samples is not None:
        sampler = DrawnShardSampler(len(dataset), num_samples, dist_ctx, seed)
    elif dist_ctx.enabled and shuffle:
        sampler = DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed)
    elif dist_ctx.enabled:
        source = Subset(dataset, range(dist_ctx.rank, len(dataset), dist_ctx.world_size))
    elif shuffle:
        sampler = RandomSampler(dataset, num_samples=num_samples, generator=generator)
    return DataLoader(source, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False)


class EpochPreview:
    """Per-epoch masks of the first [train] num_infer_images of [infer] images_dir: `Epoch_<n>_<stem>.png`.

    With epoch_change_tiled_infer, also tiled masks of [tiledinfer] images_dir (else [infer]'s) in
    epoch_change_tiled_infer_dir; those images may be huge, so only their paths are kept between epochs.
    """

    def __init__(self, cfg: Config, folder: Path, log: Callable[[str], None] = say) -> None:
        from flexunet.data.io import read_image
        from flexunet.data.pairing import list_image_files

        self.cfg, self.folder = cfg, folder
        self.images: list[tuple[str, np.ndarray]] = []
        if cfg.train.epoch_change_infer and cfg.infer.images_dir and cfg.train.num_infer_images > 0:
            try:  # a folder, an image file or a glob, as infer takes them
                files = list_image_files(cfg.infer.images_dir, cfg.infer.where("images_dir"))
            except DataError as exc:
                log(f"note: {exc}; per-epoch previews are off")
                files = []
            self.images = [(f.stem, read_image(f, cfg.model.image_channels, cfg.image.color_order))
                           for f in files[: cfg.train.num_infer_images]]
        self.tiled_files: list[Path] = []
        tiled_dir = cfg.tiledinfer.images_dir or cfg.infer.images_dir
        if cfg.train.epoch_change_tiled_infer and tiled_dir and cfg.train.num_infer_images > 0:
            self.tiled_files = list_image_files(tiled_dir, "[tiledinfer] images_dir")[: cfg.train.num_infer_images]

    def write(self, model: nn.Module, epoch: int, step: StepSettings) -> None:
        """This epoch's previews; `epoch` is numbered from 1, as in every file and message."""
        from flexunet.data.io import read_image, write_image

        model.eval()
        if self.images:
            whole = predictor_from_config(self.cfg, model, step.device, tta=False, channels_last=step.channels_last)
            for (stem, _), labels in zip(self.images, whole.labels([im for _, im in self.images]), strict=True):
                write_image(self.folder / f"Epoch_{epoch}_{stem}.png", whole.space.mask_pixels(labels))
        if self.tiled_files:
            tiled = predictor_from_config(self.cfg, model, step.device, tiled=True, tta=False)
            for path in self.tiled_files:
                image = read_image(path, self.cfg.model.image_channels, self.cfg.image.color_order)
                [labels] = tiled.labels([image])
                target = Path(self.cfg.train.epoch_change_tiled_infer_dir) / f"Epoch_{epoch}_{path.stem}.png"
                write_image(target, tiled.space.mask_pixels(labels))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy MT19937 state (a dict only with legacy=False)
    return {"torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def seed_metric_names(cfg: Config) -> tuple[list[str], list[str]]:
    """Seed metrics to compute every batch, and the two train_metrics.csv columns ([train] metrics or derived)."""
    first = cfg.model.metrics[0] if cfg.model.metrics else None
    columns = list(cfg.train.metrics) or ([first, f"val_{first}"] if first is not None else [])
    bases = [c.removeprefix("val_") for c in columns]
    names = list(dict.fromkeys([*cfg.model.metrics, *(b for b in bases if b != "loss")]))
    return names, columns


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a scheduler ending the job) like Ctrl-C, so both stop cleanly through the same path."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def epoch_row(epoch: int, lr: float, train_stats: dict[str, float], val_stats: dict[str, float], seed_names: list[str],
              seconds: float, images: int) -> dict[str, float]:
    """One history.csv row: losses, seed metrics (train and val), validation Dice/IoU per class, speed. `epoch` is
    numbered from 1, as in every file and message."""
    row = {"epoch": epoch, "lr": lr, "loss": train_stats["loss"], "val_loss": val_stats["loss"]}
    row |= {name: train_stats[name] for name in seed_names} | {f"val_{name}": val_stats[name] for name in seed_names}
    row |= {f"val_{k}": v for k, v in val_stats.items() if k.startswith(("dice", "iou"))}
    return row | {"seconds": seconds, "images_per_s": images / max(seconds, 1e-9)}


@dataclass
class TrainState:
    """Everything a resumed run needs, and the only writer of best.pt, last.pt and interrupted.pt.

    Checkpoints store epochs numbered from 1: "epoch" in last.pt is the number of finished epochs, so it is also the
    0-based index of the epoch a resumed run starts with.
    """

    model: nn.Module
    optim: Optimizer
    early: EarlyStopping
    reducer: PlateauReducer
    run: RunDir
    config: dict[str, Any]  # checkpoint_config(cfg): the resolved config and its origins
    start_epoch: int = 0  # 0-based index of the first epoch this process runs
    best_epoch: int = 0  # numbered from 1; 0 until an epoch improves
    clock: RunClock = field(default_factory=RunClock)  # the whole run's training time, resumed parts included

    def restore(self, device: torch.device, cfg: Config) -> list[str]:
        """Load last.pt; settings changed since it was written take the new value. Returns one note per change."""
        state = load_checkpoint(self.run.last, device)
        load_weights(self.model, state, self.run.last)
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optim.param_groups]
        self.optim.load_state_dict(state["optimizer"])
        changes = changed_settings(str(state["config"]), cfg)
        apply_to_optimizer(changes, self.optim, fresh_groups)
        notes = [describe(c) for c in changes]
        if any(c.key == "monitor" for c in changes):  # a best value of another monitor means nothing
            notes.append("early stopping and the plateau reducer start counting afresh for the new monitor")
        else:
            self.early.load_state_dict(state["early_stopping"])
            self.reducer.load_state_dict(state["reducer"])
        _set_rng_state(state["rng"])
        self.start_epoch, self.best_epoch = int(state["epoch"]), int(state["best_epoch"])
        self.clock.restart(float(state.get("spent_s", 0.0)))
        return notes

    def weights(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        weights = self.weights()
        if improved:
            self.best_epoch = epoch
            save_checkpoint(self.run.best, {"model": weights, **self.config, "epoch": epoch, "metrics": row})
        save_checkpoint(self.run.last, {
            "model": weights, **self.config, "epoch": epoch, "best_epoch": self.best_epoch, "metrics": row,
            "optimizer": self.optim.state_dict(), "early_stopping": self.early.state_dict(),
            "reducer": self.reducer.state_dict(), "rng": _rng_state(), "spent_s": self.clock.elapsed(),
        })

    def save_interrupted(self, epoch: int) -> Path:
        """Weights at the moment of Ctrl-C/SIGTERM, in epoch number `epoch` (from 1); last.pt keeps the last finished
        epoch for an exact resume."""
        path = self.run.model_dir / "interrupted.pt"
        save_checkpoint(path, {"model": self.weights(), **self.config, "epoch": epoch})
        return path


def validation_total(valid: SegmentationDataset, cfg: Config, dist_ctx: DistContext) -> int:
    """Images one process validates per epoch: its shard, cut to [train] validation_steps batches."""
    shard = len(range(dist_ctx.rank, len(valid), dist_ctx.world_size))
    steps = cfg.train.validation_steps
    return shard if steps is None else min(shard, steps * max(1, cfg.eval.batch_size // dist_ctx.world_size))


def check_finite_weights(model: nn.Module, epoch: int, run: RunDir, dist_ctx: DistContext,
                         device: torch.device) -> None:
    """Stop before validating or saving when the epoch's last steps left NaN/Inf weights (the loss check sees a
    diverged step only at the next batch). Every process decides together, so none waits for the others forever."""
    bad = first_nonfinite(model.state_dict())
    if any_rank(bad is not None, dist_ctx, device):
        raise TrainingError(f"epoch {epoch + 1}: weight {bad or 'on another process'} became NaN/Inf in the last "
                            f"steps; lower [model] learning_rate or set [model] clipvalue; "
                            f"{run.last}: {kept_checkpoint(run.last)}")


def monitored_value(t: TrainSection, val_stats: dict[str, float]) -> float:
    """The value early stopping and the LR plateau watch; lower is better, NaN counts as no improvement."""
    value = {"val_loss": val_stats["loss"], "val_dice": -val_stats["dice"], "val_iou": -val_stats["iou"]}[t.monitor]
    return math.inf if math.isnan(value) else value


EpochCallback = Callable[[dict[str, float]], bool | None]  # gets the history row; True stops training


@dataclass
class EpochRunner:
    """What every epoch of one `fit` call uses: the model in its training form, the loaders, the step settings."""

    model: nn.Module
    train_model: nn.Module  # `model`, or its DistributedDataParallel wrapper under torchrun
    loss_fn: LossFn
    optim: Optimizer
    scaler: torch.amp.GradScaler | None
    step: StepSettings
    cfg: Config
    seed_names: list[str]
    augment: Augment | None
    progress: Progress | None
    dist_ctx: DistContext
    data: SplitDatasets
    generator: torch.Generator = field(init=False)
    aug_generator: torch.Generator = field(init=False)
    num_samples: int | None = field(init=False)
    train_loader: DataLoader = field(init=False)
    valid_loader: DataLoader = field(init=False)
    space: LabelSpace = field(init=False)

    def __post_init__(self) -> None:
        t, device, dist_ctx = self.cfg.train, self.step.device, self.dist_ctx
        self.space = LabelSpace.from_config(self.cfg)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.aug_generator = torch.Generator(device=device).manual_seed(t.seed + 1)
        self.num_samples = t.steps_per_epoch * t.batch_size if t.steps_per_epoch else None
        self.train_loader = make_loader(self.data.train, per_rank_batch(t.batch_size, dist_ctx), True, device,
                                        t.num_workers, self.generator, self.num_samples, dist_ctx, t.seed)
        valid_batch = max(1, self.cfg.eval.batch_size // dist_ctx.world_size)  # per process: shards of one batch
        self.valid_loader = make_loader(self.data.valid, valid_batch, False, device, t.num_workers, dist_ctx=dist_ctx)

    @property
    def images_per_epoch(self) -> int:
        return self.num_samples or len(self.data.train)

    def run_epoch(self, epoch: int, run: RunDir,
                  on_step: Callable[[], bool] | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """Train and validate epoch `epoch` (0-based); returns the history row and the validation stats.
        `on_step` may end the training steps early (see train_one_epoch)."""
        t, number = self.cfg.train, epoch + 1
        # shuffling depends on (seed, epoch) only: resume repeats it exactly
        self.generator.manual_seed(t.seed + epoch)
        self.aug_generator.manual_seed(t.seed + 1 + epoch)
        if isinstance(self.train_loader.sampler, DistributedSampler | DrawnShardSampler):
            self.train_loader.sampler.set_epoch(epoch)
        began = time.perf_counter()
        bar = Bar(self.progress, f"epoch {number}/{t.epochs}", self.images_per_epoch)
        train_stats = train_one_epoch(self.train_model, self.loss_fn, self.train_loader, self.optim, self.step,
                                      self.seed_names, self.augment, self.aug_generator, self.scaler, bar,
                                      self.dist_ctx, on_step)
        images = int(train_stats.pop("images"))
        bar.close()
        seconds = time.perf_counter() - began
        check_finite_weights(self.model, epoch, run, self.dist_ctx, self.step.device)
        bar = Bar(self.progress, f"validating {number}/{t.epochs}",
                  validation_total(self.data.valid, self.cfg, self.dist_ctx))
        val_stats = validate(self.model, self.loss_fn, self.valid_loader, self.space, self.step,
                             self.seed_names, t.validation_steps, self.dist_ctx, bar)
        bar.close()
        row = epoch_row(number, self.optim.param_groups[0]["lr"], train_stats, val_stats, self.seed_names, seconds,
                        images)
        return row, val_stats


def prepare_model(model: nn.Module, step: StepSettings, dist_ctx: DistContext) -> nn.Module:
    """Move `model` to the device in its memory layout; returns the module to train (DDP-wrapped under torchrun)."""
    layout = torch.channels_last if step.channels_last else torch.preserve_format
    model.to(step.device, memory_format=layout)  # type: ignore[call-overload]  # documented; the stub omits it
    device_ids = [step.device.index] if step.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids) if dist_ctx.enabled else model


def epoch_message(row: dict[str, float], epochs: int, improved: bool, new_lr: float | None, eta: str) -> str:
    """The one line logged per epoch; `eta` is empty after the last epoch."""
    number = int(row["epoch"])
    return (f"epoch {number}/{epochs}  loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_dice {row['val_dice']:.4f}  val_iou {row['val_iou']:.4f}  {row['images_per_s']:.1f} img/s"
            + ("  [best]" if improved else "") + (f"  lr -> {new_lr:.2g}" if new_lr is not None else "")
            + (f"  {eta}" if eta else ""))


def stop_reason(row: dict[str, float], early_stop: bool, on_epoch_end: EpochCallback | None, checks: StepChecks,
                dist_ctx: DistContext, device: torch.device) -> str | None:
    """Why training stops after this epoch, or None to go on. `on_epoch_end` sees every row (on rank 0 only under
    torchrun; its answer stops every process); `checks` knows whether a step found a break_training file or the
    deadline, and whether another epoch fits in the time budget."""
    asked = bool(on_epoch_end(dict(row))) if on_epoch_end is not None and dist_ctx.is_main else False
    asked = any_rank(asked, dist_ctx, device)
    if early_stop:
        return "early_stopping"
    if asked:
        return "on_epoch_end"
    if checks.schedule is not None and not checks.clock.next_epoch_fits(checks.schedule.deadline.left()):
        checks.reason = checks.reason or "time_budget"
    reason = checks.reason or ("break_training" if any(p.exists() for p in checks.break_files) else None)
    # every process stops, for one reason: one that saw the deadline (its own clock) while another did not made
    # rank 0 stop and rank 1 start the next epoch, and both hung in its first collective
    agreed = max_over_ranks(STOP_REASONS.index(reason) + 1 if reason else 0, dist_ctx, device)
    return STOP_REASONS[agreed - 1] if agreed else None


STOP_REASONS = ("break_training", "time_budget")  # what a step or the clock can ask for, agreed by max over ranks


def stop_message(reason: str, number: int, t: TrainSection, best_epoch: int) -> str:
    """The line logged when training stops after epoch `number` for `reason` (see stop_reason)."""
    return {
        "early_stopping": f"early stopping after epoch {number}: no improvement of {t.monitor} for {t.patience} "
                          f"epochs; best epoch {best_epoch}",
        "on_epoch_end": f"on_epoch_end asked to stop after epoch {number} (checkpoints and logs are saved)",
        "break_training": f"found a 'break_training' file: stopped in epoch {number} (checkpoints and logs are saved)",
        "time_budget": f"time budget of {format_duration(t.time_budget_s or 0)} reached: stopped after epoch {number} "
                       f"(best epoch {best_epoch})",
    }[reason]


def resume_state(state: TrainState, cfg: Config, device: torch.device, dist_ctx: DistContext,
                 log: Callable[[str], None]) -> None:
    """Continue from last.pt: one note per setting changed since it was written (even under --quiet)."""
    for text in state.restore(device, cfg):
        if dist_ctx.is_main:  # even under --quiet: these settings change what the resumed run does
            note(text)
    log(f"resuming at epoch {state.start_epoch + 1} from {state.run.last}")


def fit(model: nn.Module, loss_fn: LossFn, data: SplitDatasets, cfg: Config, run: RunDir, device: torch.device,
        resume: bool = False, augment: Augment | None = None, progress: Progress | None = None,
        log: Callable[[str], None] = say, dist_ctx: DistContext = DistContext(),
        on_epoch_end: EpochCallback | None = None) -> FitResult:
    """Train `model` on `data` as [train] describes; best.pt/last.pt, CSV logs and previews go to `run`.

    Each epoch's history row is written before last.pt, so a run killed at any point resumes without a gap or a
    duplicate row. Under torchrun only rank 0 writes files. `on_epoch_end(row)` is called after each epoch is
    saved with that epoch's history.csv row; returning True stops training there, as early stopping does.
    """
    t = cfg.train
    step = step_settings(cfg, device, quiet=not dist_ctx.is_main)
    train_model = prepare_model(model, step, dist_ctx)
    optim = make_optimizer(model, cfg)
    check_freezing_supported(cfg.model, dist_ctx.enabled)
    scaler = torch.amp.GradScaler("cuda") if step.amp == torch.float16 else None
    early, reducer = EarlyStopping(t.patience), PlateauReducer(optim, t.reducer_factor, t.reducer_patience, t.min_lr)
    state = TrainState(model, optim, early, reducer, run, checkpoint_config(cfg))
    if resume and run.last.is_file():
        resume_state(state, cfg, device, dist_ctx, log)
    checks = step_checks(cfg, run, optim, state, data, dist_ctx, log)
    seed_names, columns = seed_metric_names(cfg)
    history = History(run.eval_dir, columns, state.start_epoch) if dist_ctx.is_main else None
    preview = EpochPreview(cfg, run.preview_dir, log) if dist_ctx.is_main else None
    board = open_board(t, run.eval_dir, is_main=dist_ctx.is_main)  # TensorBoard, when [train] tensorboard is on
    runner = EpochRunner(model, train_model, loss_fn, optim, scaler, step, cfg, seed_names, augment, progress,
                         dist_ctx, data)
    stopped_by, epoch = "epochs", state.start_epoch - 1
    run_bar, epoch_seconds = Bar(progress, "run", t.epochs), []

    def on_step() -> bool:  # every process sees the same spent fraction, so their learning rates agree
        schedule = checks.schedule
        spent = None if schedule is None else max_over_ranks(schedule.deadline.fraction(), dist_ctx, device)
        return any_rank(checks(spent), dist_ctx, device)

    run_bar.advance(state.start_epoch)
    with sigterm_as_interrupt():
        try:
            for epoch in range(state.start_epoch, t.epochs):  # 0-based index; files and messages say `number`
                number, began = epoch + 1, time.perf_counter()
                schedule_note = apply_encoder_schedule(model, cfg.model, epoch)
                if schedule_note:
                    log(schedule_note)
                row, val_stats = runner.run_epoch(epoch, run, on_step)
                monitored = monitored_value(t, val_stats)
                improved, stop = monitored < early.best, early.update(monitored)
                reduced = t.learning_rate_reducer and checks.schedule is None and reducer.update(monitored)
                if dist_ctx.is_main:
                    assert history is not None and preview is not None  # made on the main process
                    history.append(row)  # before last.pt: see the docstring
                    state.save(number, row, improved)
                    preview.write(model, number, step)
                    board.log_epoch(number, row, run.preview_dir)
                else:
                    state.best_epoch = number if improved else state.best_epoch
                epoch_seconds.append(time.perf_counter() - began)
                checks.clock.add(row["seconds"], epoch_seconds[-1])
                eta = run_eta(t.epochs - number, sum(epoch_seconds) / len(epoch_seconds))
                run_bar.advance()
                run_bar.update(f"best epoch {state.best_epoch}", eta)
                log(epoch_message(row, t.epochs, improved, optim.param_groups[0]["lr"] if reduced else None,
                                  eta if number < t.epochs and not stop else ""))
                reason = stop_reason(row, stop, on_epoch_end, checks, dist_ctx, device)
                if reason is not None:
                    log(stop_message(reason, number, t, state.best_epoch))
                    stopped_by = reason
                    break
        except KeyboardInterrupt:
            if dist_ctx.is_main:
                log(f"interrupted in epoch {epoch + 1}: weights saved to {state.save_interrupted(epoch + 1)}; "
                    "last.pt holds the last finished epoch (continue with --resume)")
            raise
    board.close()
    run_bar.close()
    rows = history.rows if history else []
    return FitResult(run, epoch + 1 - state.start_epoch, state.best_epoch, early.best,
                     stopped_by == "early_stopping", rows, stopped_by, state.clock.elapsed(), t.time_budget_s)


def step_checks(cfg: Config, run: RunDir, optim: Optimizer, state: TrainState, data: SplitDatasets,
                dist_ctx: DistContext, log: Callable[[str], None]) -> StepChecks:
    """The per-step checks of this run: a break_training file always, the time budget's schedule when set."""
    t, schedule = cfg.train, None
    if t.time_budget_s:
        deadline = Deadline(t.time_budget_s, state.clock)
        schedule = BudgetSchedule(optim, deadline, t.min_lr)
        if t.learning_rate_reducer:
            log(f"note: {t.where('time_budget')}: the learning rate follows the budget (cosine to the deadline); "
                "learning_rate_reducer is not used")
        log(f"time budget {format_duration(t.time_budget_s)}"
            + (f", {format_duration(deadline.left())} left" if state.clock.spent_s else "")
            + ": the learning rate warms up, then anneals to the deadline")
    batches = -(-validation_total(data.valid, cfg, dist_ctx) // max(1, cfg.eval.batch_size // dist_ctx.world_size))
    return StepChecks(schedule, EpochClock(), (Path("break_training"), run.model_dir / "break_training"), batches)
