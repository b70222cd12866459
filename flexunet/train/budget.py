"""[train] time_budget: training that ends by a deadline, with its learning rate annealed to that deadline.

The schedule follows the clock, not an epoch count: a short linear warm-up, then a cosine from [model] learning_rate
down to [train] min_lr at the deadline. The fraction of the budget spent is re-read at every step, so the schedule
fits the machine's real speed without predicting a number of steps; a resumed run carries the time already spent
(last.pt) and continues the same curve. An epoch that would not finish before the deadline is not started, and a
running epoch stops early when only the time its validation and saving took last time is left.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch.optim import Optimizer

WARMUP = 0.03  # fraction of the budget spent warming the learning rate up from a hundredth of it


@dataclass
class RunClock:
    """Training time of a whole run: the seconds spent before this process (a resumed run's earlier parts, which
    last.pt records) plus this process's."""

    spent_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.spent_s + time.perf_counter() - self.started

    def restart(self, spent_s: float) -> None:
        """Continue a run that had already spent `spent_s` seconds."""
        self.spent_s, self.started = spent_s, time.perf_counter()


@dataclass
class Deadline:
    """The budget in seconds against the run's clock (the one TrainState saves, so a resumed run continues it)."""

    budget_s: float
    clock: RunClock = field(default_factory=RunClock)

    def elapsed(self) -> float:
        return self.clock.elapsed()

    def fraction(self) -> float:
        """How much of the budget is spent, in [0, 1]."""
        return min(1.0, self.elapsed() / self.budget_s)

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def annealed_lr(base: float, floor: float, fraction: float, warmup: float = WARMUP) -> float:
    """The learning rate after `fraction` of the budget: linear warm-up from base/100, then cosine to `floor`."""
    if fraction < warmup:
        return base * (0.01 + 0.99 * fraction / warmup)
    progress = min(1.0, (fraction - warmup) / (1.0 - warmup))
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BudgetSchedule:
    """Sets every parameter group's learning rate from the deadline; each group keeps its ratio to the first (an
    encoder at [model] encoder_lr_scale stays at that scale)."""

    def __init__(self, optimizer: Optimizer, deadline: Deadline, floor: float) -> None:
        self.optimizer, self.deadline, self.floor = optimizer, deadline, floor
        self.bases = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.bases, strict=True):
            group.setdefault("initial_lr", base)

    def step(self, fraction: float | None = None) -> float:
        """Set the learning rates for `fraction` of the budget spent (default: now); returns the first group's."""
        spent = self.deadline.fraction() if fraction is None else fraction
        top = self.bases[0]
        for group, base in zip(self.optimizer.param_groups, self.bases, strict=True):
            scale = base / top if top else 1.0
            group["lr"] = annealed_lr(base, self.floor * scale, spent)
        return float(self.optimizer.param_groups[0]["lr"])


@dataclass
class EpochClock:
    """How long epochs take here, to decide whether the next one fits in what is left of the budget."""

    train_s: list[float] = field(default_factory=list)  # training steps of each epoch
    rest_s: list[float] = field(default_factory=list)  # validation, saving and previews after them

    def add(self, train_s: float, total_s: float) -> None:
        self.train_s.append(train_s)
        self.rest_s.append(max(0.0, total_s - train_s))

    def reserve(self, budget_s: float = 0.0, first_guess_s: float = 0.0) -> float:
        """Seconds to keep for the validation and saving that follow the training steps: the median of the last
        three epochs' (saving and plotting vary from epoch to epoch), or before any epoch has ended
        `first_guess_s` (see StepChecks) plus a twentieth of the budget for saving."""
        return statistics.median(self.rest_s[-3:]) if self.rest_s else first_guess_s + 0.05 * budget_s

    def next_epoch_fits(self, left_s: float) -> bool:
        """Whether another epoch is worth starting: at least a quarter of the last one's training steps fit before
        its validation and saving must begin (its steps stop there; the first epoch always starts)."""
        if not self.train_s:
            return True
        return left_s - self.reserve() >= 0.25 * self.train_s[-1]


@dataclass
class StepChecks:
    """What training looks at after every step: the deadline (setting the learning rate on the way) and a
    `break_training` file in the working folder or model_dir. `reason` says which one asked to stop."""

    schedule: BudgetSchedule | None
    clock: EpochClock
    break_files: tuple[Path, ...]
    validation_batches: int = 0  # per epoch: with the step time, the first epoch's guess of its validation time
    reason: str | None = None
    steps: int = 0
    first_step_end: float = 0.0
    last_step_end: float = 0.0

    def validation_guess(self) -> float:
        """Before the first validation: its batches at half a training step each (a forward pass alone is about a
        third of one; the first step, slow with one-off setup, is left out)."""
        if self.steps < 2:
            return 0.0
        return self.validation_batches * 0.5 * (self.last_step_end - self.first_step_end) / (self.steps - 1)

    def __call__(self, fraction: float | None = None) -> bool:
        """True when the running epoch should end after this step."""
        self.steps += 1
        self.last_step_end = time.perf_counter()
        if self.steps == 1:
            self.first_step_end = self.last_step_end
        if self.schedule is not None:
            self.schedule.step(fraction)
            budget = self.schedule.deadline.budget_s
            if self.schedule.deadline.left() <= self.clock.reserve(budget, self.validation_guess()):
                self.reason = "time_budget"
        if any(path.exists() for path in self.break_files):
            self.reason = "break_training"
        return self.reason is not None
