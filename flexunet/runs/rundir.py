"""The folders one training run writes to. A run never deletes an earlier one: it is moved aside instead, and only
folders an earlier run made (with a MARKER file) are moved. One flexunet run at a time writes into a folder (LOCK):
training holds model_dir, eval_dir and the preview folders, evaluation its eval_dir, inference its output folders."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

if sys.platform != "win32":
    import fcntl
else:  # Windows: no flock, so trainings into one model_dir are not kept apart there
    fcntl = None

from flexunet.config.schema import Config
from flexunet.errors import OutputError
from flexunet.files import (
    MANIFEST,
    RUN_MARKER,
    atomic_write_text,
    current_guard,
    make_folder,
    output_error,
    real_path,
)

MARKER = RUN_MARKER  # written into every folder a training run uses: only such folders are ever moved aside
LOCK = ".flexunet-lock"  # in each folder a run writes to, while it runs: flock plus the holder's pid
_BOOKKEEPING = (MARKER, LOCK, MANIFEST)  # files that make no folder "not empty"

__all__ = ["RunDir", "locked_folders", "run_dir_for"]


@dataclass(frozen=True)
class RunDir:
    """model_dir (checkpoints, resolved config), eval_dir (CSV logs, plots), preview_dir (per-epoch previews),
    and tiled_preview_dir when tiled previews are on."""

    model_dir: Path
    eval_dir: Path
    preview_dir: Path
    tiled_preview_dir: Path | None = None
    eval_key: str = "[train] eval_dir"  # the key that named eval_dir, for messages

    @property
    def best(self) -> Path:
        return self.model_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.model_dir / "last.pt"

    def checkpoint(self, given: Path | str | None = None) -> Path:
        """The checkpoint evaluation and inference use: `given`, else best.pt, else last.pt (a run stopped early)."""
        if given:
            return Path(given)
        return self.best if self.best.is_file() else self.last

    @property
    def resolved_config(self) -> Path:
        return self.model_dir / "config.resolved.ini"

    def folders(self) -> tuple[Path, ...]:
        folders = (self.model_dir, self.eval_dir, self.preview_dir, self.tiled_preview_dir)
        return tuple(dict.fromkeys(f for f in folders if f is not None))

    def named_folders(self) -> dict[Path, str]:
        """Each folder with the config key that names it (the first, where two keys name one folder)."""
        named = {self.model_dir: "[train] model_dir", self.eval_dir: self.eval_key,
                 self.preview_dir: "[train] epoch_change_infer_dir"}
        if self.tiled_preview_dir is not None:
            named.setdefault(self.tiled_preview_dir, "[train] epoch_change_tiled_infer_dir")
        return {folder: named.get(folder, str(folder)) for folder in self.folders()}

    def foreign_folders(self) -> list[str]:
        """One line per non-empty folder that is not an earlier run: training refuses to touch those."""
        return [f"{key} {folder}: not empty and not a flexunet run folder (it has no {MARKER}); flexunet moves aside "
                f"only its own earlier runs. Point {key} at a new or empty folder, or move its files away yourself"
                for folder, key in self.named_folders().items() if not _is_empty(folder) and not is_run_folder(folder)]

    def prepare(self, resume: bool) -> list[Path]:
        """Create the folders, each with a MARKER file. Without resume, non-empty earlier runs (folders with a
        MARKER) move to `<dir>_<time>_bak`; any other non-empty folder raises OutputError before anything moves.

        Returns the folders the earlier runs were moved to.
        """
        moved = []
        if not resume:
            foreign = self.foreign_folders() + self.held_inputs()
            if foreign:
                raise OutputError("\n".join(foreign))
            stamp = datetime.now().strftime("%Y-%m-%d_%H_%M_%S_%f")
            for folder in self.folders():
                if not _is_empty(folder):
                    moved.append(_move_aside(folder, folder.with_name(f"{folder.name}_{stamp}_bak")))
        for folder in self.folders():
            make_folder(folder)
            if not (folder / MARKER).is_file():
                atomic_write_text(folder / MARKER, "a flexunet training run: `flexunet train` may move this folder "
                                                   "aside to <name>_<time>_bak when a new run starts here\n")
        return moved

    def held_inputs(self) -> list[str]:
        """One line per file this run reads (the config, weights) that moving an earlier run aside would take."""
        return [f"{key} {folder}: holds {item.why} ({item.path}), which moving this earlier run aside would take "
                f"away; keep it elsewhere or point {key} at another folder"
                for folder, key in self.named_folders().items() for item in current_guard().protected
                if folder.is_dir() and real_path(item.path).is_relative_to(real_path(folder))
                and not _is_empty(folder)]

    @property
    def lock_file(self) -> Path:
        return self.model_dir / LOCK

    def locked(self) -> AbstractContextManager[None]:
        """Hold every folder's lock while training: a second run writing into any of them stops with OutputError."""
        return locked_folders(self.named_folders())


def is_run_folder(folder: Path) -> bool:
    """A folder an earlier `flexunet train` made (it holds the MARKER file)."""
    return (folder / MARKER).is_file()


def _is_empty(folder: Path) -> bool:
    """Missing, or holding nothing but the marker, the manifest and the lock: nothing to move aside."""
    return not folder.is_dir() or all(entry.name in _BOOKKEEPING for entry in folder.iterdir())


def _move_aside(folder: Path, target: Path) -> Path:
    """Move the entries of `folder` into a new `target`, except the held locks (this folder's and those of folders
    inside it: the run's other folders may sit in this one)."""
    make_folder(target)
    held = {Path(p).resolve() for p in _HELD}
    for entry in sorted(folder.iterdir()):
        if not any(lock.is_relative_to(entry.resolve()) for lock in held):
            entry.rename(target / entry.name)
    return target


_HELD: dict[Path, int] = {}  # lock file -> descriptor, for the locks this process holds


@contextmanager
def locked_folders(folders: dict[Path, str]) -> Iterator[None]:
    """Hold the lock of each folder (folder -> the key that names it) while a run writes there: another flexunet
    process writing into any of them stops with OutputError. flock is released by the kernel when the holder dies,
    so a lock file left by a killed run is taken over."""
    taken: list[Path] = []
    try:
        for folder, key in folders.items():
            path = Path(folder) / LOCK
            if fcntl is None:  # Windows: no flock, so runs into one folder are not kept apart there
                continue
            make_folder(Path(folder))
            _HELD[path] = _lock(path, key)
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            path.unlink(missing_ok=True)  # still holding the lock: no one else can have it
            os.close(_HELD.pop(path))


def _lock(path: Path, key: str) -> int:
    """An open descriptor holding an exclusive flock on `path`, which then holds this process's pid."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise output_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(f"{key} {path.parent}: another flexunet run (pid {holder}) is writing there; "
                              f"wait for it to finish, or point {key} at another folder") from None
        if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def run_dir_for(cfg: Config) -> RunDir:
    """The run's folders: [train] model_dir, eval_dir ([eval] eval_dir when only that is given), preview dir."""
    eval_dir = cfg.train.eval_dir
    if cfg.resolved.eval_dir_section == "eval" and cfg.eval.eval_dir:
        eval_dir = cfg.eval.eval_dir
    eval_key = "[train] eval_dir" if eval_dir == cfg.train.eval_dir else "[eval] eval_dir"
    tiled = Path(cfg.train.epoch_change_tiled_infer_dir) if cfg.train.epoch_change_tiled_infer else None
    return RunDir(Path(cfg.train.model_dir), Path(eval_dir), Path(cfg.train.epoch_change_infer_dir), tiled, eval_key)
