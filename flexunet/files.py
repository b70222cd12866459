"""Writing output files: each one whole or not at all, with the permissions the umask gives, and a full disk
reported as a user error (OutputError) instead of a traceback or a silently empty file."""
from __future__ import annotations

import errno
import glob
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from flexunet.errors import OutputError

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def remove_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files that writers of `path` killed before their rename (SIGKILL, power loss) left
    behind. Only for a path no running process is writing: a resumed pass calls it for the files it owns."""
    stale = sorted(Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def output_error(path: Path, exc: OSError) -> OutputError:
    """The one-line error for a file that could not be written; a full disk says so and what to do."""
    if exc.errno in _FULL:
        return OutputError(f"{path}: cannot write, the disk is full ({exc.strerror or exc}); earlier files are kept. "
                           "Free some space and run again")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def _open_temp(fd: int) -> BinaryIO:
    """The temporary file as a buffered binary file (the one place tests put a simulated full disk)."""
    return os.fdopen(fd, "wb")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let `write` fill a temporary file in the same folder, flush it to disk, then rename it to `path`: a crash or a
    full disk leaves the old file or the new one, never half of one. Streaming into the file (torch.save of a
    checkpoint) needs no second copy of the bytes in memory. The file gets 0666 minus the umask (0644 under umask
    022), like any file `open()` creates; tempfile.mkstemp would leave 0600."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with _open_temp(fd) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # a full disk can surface only here, when the data reaches it
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` to `path`, whole or not at all (see atomic_write)."""
    atomic_write(path, lambda file: file.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
