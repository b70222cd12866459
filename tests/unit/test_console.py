"""Progress display text: durations and the run-level ETA."""
from __future__ import annotations

from rich.progress import Progress

from flexunet.console import RemainingColumn, format_duration, run_eta


def test_durations_are_short_and_exact() -> None:
    assert [format_duration(s) for s in (0, 45, 185, 3599, 7620)] == ["0s", "45s", "3m 05s", "59m 59s", "2h 07m"]


def test_run_eta_is_epochs_left_times_the_measured_epoch_time() -> None:
    assert run_eta(3, 40.0) == "ETA 2m 00s"  # 3 x 40 s
    assert run_eta(1, 12.4) == "ETA 12s" and run_eta(0, 40.0) == "done"


def test_remaining_column_shows_the_run_eta_instead_of_rich_s_guess() -> None:
    progress = Progress()
    run = progress.add_task("run", total=10, info="", eta="ETA 2m 00s")
    epoch = progress.add_task("epoch 1/10", total=8, info="")
    column = RemainingColumn()
    assert column.render(progress.tasks[run]).plain == "ETA 2m 00s"
    assert column.render(progress.tasks[epoch]).plain != "ETA 2m 00s"  # rich's own estimate for the epoch bar
