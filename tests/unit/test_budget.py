"""[train] time_budget: durations, the learning rate annealed to the deadline, and when another epoch fits."""
from __future__ import annotations

import math

import pytest
import torch

from flexunet.config import config_from_text
from flexunet.config.schema import duration_seconds
from flexunet.errors import ConfigError
from flexunet.train.budget import BudgetSchedule, Deadline, EpochClock, RunClock, annealed_lr


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90),
                                           ("2m30s", 150), ("45", 45), (600, 600)])
def test_durations(text: str | int, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["20 minutes", "0", "-5", "m", "", "1y"])
def test_a_bad_budget_is_a_config_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"x\.config \[train\] time_budget") as info:
        config_from_text(f'[train]\ntime_budget = "{text}"\n', "x.config")
    assert "\n" not in str(info.value)


def test_the_learning_rate_warms_up_then_anneals_to_the_floor() -> None:
    base, floor = 1e-3, 1e-5
    assert annealed_lr(base, floor, 0.0) == pytest.approx(base / 100)
    assert annealed_lr(base, floor, 0.03) == pytest.approx(base)  # the end of the warm-up is the peak
    middle = 0.03 + 0.97 / 2
    assert annealed_lr(base, floor, middle) == pytest.approx(floor + (base - floor) / 2)
    assert annealed_lr(base, floor, 1.0) == pytest.approx(floor)
    values = [annealed_lr(base, floor, f / 100) for f in range(3, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never rises after the warm-up
    assert math.isclose(annealed_lr(base, floor, 0.5), floor + (base - floor) * 0.5 * (1 + math.cos(
        math.pi * (0.5 - 0.03) / 0.97)))


def test_the_schedule_keeps_each_groups_ratio() -> None:
    encoder, decoder = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optim = torch.optim.Adam([{"params": decoder.parameters(), "lr": 1e-3},
                              {"params": encoder.parameters(), "lr": 1e-4}])
    schedule = BudgetSchedule(optim, Deadline(100.0), floor=0.0)
    for fraction in (0.01, 0.2, 0.7):
        top = schedule.step(fraction)
        assert optim.param_groups[1]["lr"] == pytest.approx(top / 10)


def test_another_epoch_starts_only_when_a_quarter_of_one_fits_before_its_validation() -> None:
    clock = EpochClock()
    assert clock.next_epoch_fits(1.0)  # the first epoch always starts
    clock.add(train_s=40.0, total_s=50.0)  # 10 s of validation and saving
    assert clock.reserve() == 10.0 and EpochClock().reserve(100.0) == 5.0
    assert clock.next_epoch_fits(20.0) and not clock.next_epoch_fits(19.9)


def test_a_deadline_counts_the_time_spent_before_a_resume() -> None:
    deadline = Deadline(100.0, RunClock(spent_s=40.0))
    assert 40.0 <= deadline.elapsed() < 41.0 and 0.4 <= deadline.fraction() < 0.41


def test_before_the_first_validation_its_time_is_guessed_from_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet.train import budget

    now = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: now[0])
    checks = budget.StepChecks(None, EpochClock(), (), validation_batches=10)
    for _ in range(5):  # a slow first step (setup), then 2 s a step
        checks()
        now[0] += 2.0
    # 4 steps of 2 s after the first; 10 validation batches at half a step each
    assert checks.validation_guess() == pytest.approx(10 * 0.5 * 2.0)
    assert EpochClock().reserve(100.0, checks.validation_guess()) == pytest.approx(10.0 + 5.0)


def test_a_stop_seen_by_another_process_stops_this_one_for_the_same_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun each process reads its own clock: rank 0 saw the deadline, rank 1 did not, and rank 1 went on
    to the next epoch (stop_reason returned None there) while rank 0 stopped: both hung in the next collective."""
    from flexunet.train import budget, loop
    from flexunet.train.distributed import DistContext

    ctx = DistContext(rank=1, world_size=2, local_rank=1)
    monkeypatch.setattr(loop, "any_rank", lambda flag, _ctx, _device: flag)  # nobody asked on_epoch_end to stop
    monkeypatch.setattr(loop, "max_over_ranks", lambda value, _ctx, _device: max(value, 2))  # rank 0: deadline
    here = budget.StepChecks(None, EpochClock(), ())  # this process saw nothing
    assert loop.stop_reason({}, False, None, here, ctx, torch.device("cpu")) == "time_budget"
    monkeypatch.setattr(loop, "max_over_ranks", lambda value, _ctx, _device: value)  # no process saw anything
    assert loop.stop_reason({}, False, None, here, ctx, torch.device("cpu")) is None
