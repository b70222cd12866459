"""`train --budget`: training ends inside the time given, its learning rate annealed to the deadline, resumable with
the time already spent; a break_training file is seen at the next step; progress lines when not on a terminal."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from flexunet.config import load_config
from flexunet.train import train_from_config
from tests.conftest import make_config, run_cli

pytestmark = pytest.mark.slow
# epochs of 2 steps and 1 validation batch: the deadline is met to a fraction of a second even on a loaded machine
SHORT_EPOCHS = {"train": {"epochs": 10_000, "patience": 0, "epoch_change_infer": False, "steps_per_epoch": 2,
                          "validation_steps": 1}}


def assert_near_budget(seconds: float, budget: float, epochs: int) -> None:
    """Within 15% of the budget, or of one epoch where an epoch is longer (a loaded machine: a 2-step epoch of this
    toy model took 10 s at a load average of 7 on 2 cores, 0.3 s on an idle one). Over by more would mean the
    deadline is ignored; under by more, that the reserve kept for validation and saving is wrong."""
    slack = max(0.15 * budget, seconds / epochs)
    assert budget - 2 * slack <= seconds <= budget + slack, (seconds, budget, epochs)


def test_training_ends_inside_the_budget_with_the_learning_rate_annealed(tmp_path: Path, tiny_dataset: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, tiny_dataset, SHORT_EPOCHS)
    began = time.perf_counter()
    assert run_cli(monkeypatch, "train", str(config), "--budget", "15s", "--device", "cpu") == 0
    wall = time.perf_counter() - began
    out = capsys.readouterr().out
    assert "time budget of 15s reached: stopped after epoch" in out
    took = next(line for line in out.splitlines() if line.startswith("took "))
    seconds = float(took.split()[1].rstrip("s"))
    rows = (tmp_path / "eval" / "history.csv").read_text().splitlines()
    lr_column = rows[0].split(",").index("lr")
    lrs = [float(r.split(",")[lr_column]) for r in rows[1:]]
    assert_near_budget(seconds, 15, len(lrs))
    assert wall < seconds + 30  # loading, building and the final save on top
    # [model] learning_rate 0.01: the clock's schedule ran (its values are tested in unit/test_budget.py)
    peak = lrs.index(max(lrs))  # rows before it end inside the warm-up, where the rate still rises
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False)), lrs
    assert (tmp_path / "models" / "best.pt").is_file()


def test_a_resumed_run_counts_the_time_already_spent(tmp_path: Path, tiny_dataset: Path) -> None:
    config = make_config(tmp_path, tiny_dataset, SHORT_EPOCHS)
    first = train_from_config(load_config(config, ["train.time_budget=8s"]), device="cpu", quiet=True)
    assert first.stopped_by == "time_budget"
    assert_near_budget(first.seconds, 8, len(first.history))
    again = train_from_config(load_config(config, ["train.time_budget=16s"]), device="cpu", quiet=True, resume=True)
    assert again.stopped_by == "time_budget" and again.history[-1]["epoch"] > first.history[-1]["epoch"]
    assert_near_budget(again.seconds, 16, len(again.history))  # the whole run's time, the first part included


def test_a_break_training_file_stops_the_epoch_at_the_next_step(tmp_path: Path, tiny_dataset: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 5, "batch_size": 2,
                                                           "epoch_change_infer": False}})
    monkeypatch.chdir(tmp_path)
    Path("break_training").touch()
    result = train_from_config(load_config(config), device="cpu", quiet=True)
    assert result.stopped_by == "break_training" and result.epochs_run == 1
    row = result.history[0]
    assert row["images_per_s"] * row["seconds"] == pytest.approx(2)  # one step of 2 images, not the epoch's 16
    assert (tmp_path / "models" / "last.pt").is_file()


def test_progress_lines_when_the_output_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from flexunet.console import LineProgress

    with LineProgress(every_s=0.0) as progress:
        task = progress.add_task("epoch 1/3", total=16, info="loss 0.5")
        for _ in range(4):
            progress.advance(task, 4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("epoch 1/3: 16/16") and lines[-1].endswith("loss 0.5") and len(lines) == 4
