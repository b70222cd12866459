"""The folders one training run writes to. A run never deletes an earlier one: it is moved aside instead."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, flush to disk, then rename: a crash leaves old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class RunDir:
    """model_dir (checkpoints, resolved config), eval_dir (CSV logs, plots), preview_dir (per-epoch previews),
    and tiled_preview_dir when tiled previews are on."""

    model_dir: Path
    eval_dir: Path
    preview_dir: Path
    tiled_preview_dir: Path | None = None

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

    def prepare(self, resume: bool) -> list[Path]:
        """Create the folders. Without resume, non-empty ones from an earlier run move to `<dir>_<time>_bak`.

        Returns the folders that were moved aside.
        """
        moved = []
        if not resume:
            stamp = datetime.now().strftime("%Y-%m-%d_%H_%M_%S_%f")
            for folder in self.folders():
                if folder.is_dir() and any(folder.iterdir()):
                    target = folder.with_name(f"{folder.name}_{stamp}_bak")
                    folder.rename(target)
                    moved.append(target)
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)
        return moved
