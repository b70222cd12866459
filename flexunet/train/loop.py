"""The training loop: for each epoch train, validate, update early stopping and the LR schedule, save, log."""
from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, DistributedSampler

from flexunet.config.schema import Config, TrainSection
from flexunet.console import Bar, format_duration, run_eta, say
from flexunet.data.dataset import SegmentationDataset, SplitDatasets
from flexunet.errors import TrainingError
from flexunet.labels import LabelSpace
from flexunet.losses import LossFn
from flexunet.runs.checkpoint import (
    checkpoint_config,
    first_nonfinite,
    kept_checkpoint,
)
from flexunet.runs.rundir import RunDir
from flexunet.train.budget import BudgetSchedule, Deadline, EpochClock, StepChecks
from flexunet.train.distributed import (
    DistContext,
    DrawnShardSampler,
    any_rank,
    max_over_ranks,
    per_rank_batch,
)
from flexunet.train.history import History
from flexunet.train.param_groups import apply_encoder_schedule, check_freezing_supported
from flexunet.train.preview import EpochPreview
from flexunet.train.schedule import EarlyStopping, PlateauReducer
from flexunet.train.state import TrainState, resume_state
from flexunet.train.step import (
    Augment,
    StepSettings,
    make_loader,
    make_optimizer,
    prepare_model,
    step_settings,
    train_one_epoch,
    validate,
)
from flexunet.train.tensorboard import open_board


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


def seed_metric_names(metrics: Sequence[str], logged: Sequence[str]) -> tuple[list[str], list[str]]:
    """Seed metrics to compute every batch ([model] `metrics` and what [train] metrics, `logged`, names), and the two
    train_metrics.csv columns (`logged`, or derived from the first metric)."""
    first = metrics[0] if metrics else None
    columns = list(logged) or ([first, f"val_{first}"] if first is not None else [])
    bases = [c.removeprefix("val_") for c in columns]
    names = list(dict.fromkeys([*metrics, *(b for b in bases if b != "loss")]))
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


def validation_total(valid: SegmentationDataset, steps: int | None, batch_size: int, dist_ctx: DistContext) -> int:
    """Images one process validates per epoch: its shard, cut to `steps` ([train] validation_steps) batches of
    `batch_size` ([eval] batch_size) shared by the processes."""
    shard = len(range(dist_ctx.rank, len(valid), dist_ctx.world_size))
    return shard if steps is None else min(shard, steps * max(1, batch_size // dist_ctx.world_size))


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
                  validation_total(self.data.valid, t.validation_steps, self.cfg.eval.batch_size,
                                   self.dist_ctx))
        val_stats = validate(self.model, self.loss_fn, self.valid_loader, self.space, self.step,
                             self.seed_names, t.validation_steps, self.dist_ctx, bar)
        bar.close()
        row = epoch_row(number, self.optim.param_groups[0]["lr"], train_stats, val_stats, self.seed_names, seconds,
                        images)
        return row, val_stats


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
    optim = make_optimizer(model, cfg.model)
    check_freezing_supported(cfg.model, dist_ctx.enabled)
    scaler = torch.amp.GradScaler("cuda") if step.amp == torch.float16 else None
    early, reducer = EarlyStopping(t.patience), PlateauReducer(optim, t.reducer_factor, t.reducer_patience, t.min_lr)
    state = TrainState(model, optim, early, reducer, run, checkpoint_config(cfg))
    if resume and run.last.is_file():
        resume_state(state, cfg, device, dist_ctx, log)
    checks = step_checks(cfg, run, optim, state, data, dist_ctx, log)
    seed_names, columns = seed_metric_names(cfg.model.metrics, cfg.train.metrics)
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
    shared = max(1, cfg.eval.batch_size // dist_ctx.world_size)
    batches = -(-validation_total(data.valid, t.validation_steps, cfg.eval.batch_size, dist_ctx) // shared)
    return StepChecks(schedule, EpochClock(), (Path("break_training"), run.model_dir / "break_training"), batches)
