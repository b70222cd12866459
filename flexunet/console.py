"""Terminal output: one rich console and progress bars that turn into no-ops when quiet."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(highlight=False, soft_wrap=True)
error_console = Console(highlight=False, soft_wrap=True, stderr=True)  # errors go to stderr, as CLI users expect


class Bar:
    """A progress bar for one loop; `advance()` and `update(text)` do nothing when quiet."""

    def __init__(self, progress: Progress | None, description: str, total: int | None) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total, info="") if progress is not None else None

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def update(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.remove_task(self._task)


@contextmanager
def progress_bars(quiet: bool) -> Iterator[Progress | None]:
    """A live progress display for the duration of a command (None when quiet)."""
    if quiet:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True,
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
