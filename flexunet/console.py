"""Terminal output: one rich console and progress bars that turn into no-ops when quiet."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
error_console = Console(highlight=False, soft_wrap=True, stderr=True)  # errors go to stderr, as CLI users expect


class Bar:
    """A progress bar for one loop; `advance()` and `update(text)` do nothing when quiet."""

    def __init__(self, progress: Progress | None, description: str, total: int | None) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total, info="") if progress is not None else None

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def update(self, text: str, eta: str | None = None) -> None:
        """Show `text` beside the bar; `eta` replaces rich's own time-remaining estimate (a run-level ETA)."""
        if self._progress is not None and self._task is not None:
            fields: dict[str, Any] = {"info": text} if eta is None else {"info": text, "eta": eta}
            self._progress.update(self._task, **fields)

    def close(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)


def format_duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `2h 07m`: short enough for a progress line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def run_eta(epochs_left: int, seconds_per_epoch: float) -> str:
    """Time left for the whole run: epochs remaining x the measured epoch time (training, validation, saving).
    Early stopping can end the run sooner."""
    return f"ETA {format_duration(epochs_left * seconds_per_epoch)}" if epochs_left > 0 else "done"


class RemainingColumn(TimeRemainingColumn):
    """rich's time remaining, or the task's own `eta` field where the loop knows better (the run-level bar)."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text(eta, style="progress.remaining") if eta else super().render(task)


class LineProgress(Progress):
    """Progress for output that is not a terminal (nohup, a scheduler's log file), where a live bar shows nothing:
    every `every_s` seconds, one line for the task being advanced, with its count, speed and time left."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__(console=console, disable=True)
        self.every_s, self._last = every_s, time.monotonic()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None:
            return
        done = f"{task.completed:g}" + (f"/{task.total:g}" if task.total else "")
        speed = f", {task.speed:.1f}/s" if task.speed else ""
        left = f", {format_duration(task.time_remaining)} left" if task.time_remaining is not None else ""
        info = f", {task.fields['info']}" if task.fields.get("info") else ""
        say(f"{task.description}: {done}{speed}{left}{info}")


@contextmanager
def progress_bars(quiet: bool) -> Iterator[Progress | None]:
    """A live progress display for the duration of a command (None when quiet); when the output is not a terminal,
    a line every 30 s instead (LineProgress)."""
    if quiet:
        yield None
        return
    if not console.is_terminal:
        with LineProgress() as lines:
            yield lines
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        RemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True,
    )
    with progress:
        yield progress


def say(text: str) -> None:
    """Print a line as-is (no rich markup: config sections like [test] must show)."""
    console.print(text, markup=False)


def error(text: str) -> None:
    """Print `error: ...` on stderr."""
    error_console.print(f"error: {text}", markup=False, style="bold red")


def note(text: str) -> None:
    """Print a dimmed `note: ...` line."""
    console.print(f"note: {text}", markup=False, style="dim")


def plural(count: int, word: str, many: str | None = None) -> str:
    """`word` for one, else its plural ("1 mask", "2 masks"): counts in messages read as English."""
    return word if count == 1 else (many or f"{word}s")
