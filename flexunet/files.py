"""Every output file goes through here: the one seam that decides whether a file may be written, and writes it whole
or not at all.

A file may be written when it is new, or when flexunet wrote it before: each folder flexunet writes into keeps a
manifest (MANIFEST) naming the files written there, with an optional tag (the settings that shaped the file, for
`infer --resume`); folders of earlier training runs (RUN_MARKER) count as flexunet's whole. An existing file that
flexunet did not write is refused unless the command runs with `--overwrite`, and the files a command reads (its
config, the checkpoint or weights it loads, anything under a configured input folder) are refused always. Commands
state what they read with `guarded(...)`; checking every planned output first (`check_outputs`) makes a refusal
happen before anything is written. Files are written to a temporary name and renamed, with the umask's permissions;
a full disk, a missing permission or a file where a folder is expected becomes a one-line OutputError.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, TypeVar

from flexunet.errors import OutputError

MANIFEST = ".flexunet-files"  # in each folder flexunet writes to: one line per file written, "name<TAB>tag"
RUN_MARKER = ".flexunet-run"  # in each folder of a training run (flexunet's own folder, may be moved aside)
T = TypeVar("T")
# weights files: an existing one is replaced only by a writer of the same kind (training's checkpoints, export's
# ONNX files), never by a report, a plot or a summary, even one flexunet wrote there
WEIGHT_KINDS = {".pt": "checkpoint", ".pth": "checkpoint", ".ckpt": "checkpoint", ".safetensors": "checkpoint",
                ".bin": "checkpoint", ".onnx": "onnx"}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file size limit (ulimit -f) reached


@dataclass(frozen=True)
class Protected:
    """A file or folder the running command reads, so never writes: `why` names it for the message."""

    path: Path  # as the user gave it; compared by its real path
    why: str  # e.g. "the config file", "[train] images_dir", "the checkpoint this command reads"


@dataclass(frozen=True)
class OutputGuard:
    """What the running command may write: not its inputs, and no existing file flexunet did not write unless
    `overwrite` (the user's --overwrite)."""

    protected: tuple[Protected, ...] = ()
    overwrite: bool = False

    @cached_property
    def _held(self) -> tuple[tuple[Protected, Path, bool], ...]:
        """(item, its real path, whether it is a folder) of each protected path, resolved once per guard: every
        written file is checked against all of them."""
        return tuple((item, real_path(item.path), real_path(item.path).is_dir()) for item in self.protected)

    def problem(self, path: Path, kind: str = "") -> str | None:
        """Why `path` must not be written by a writer of `kind` ("checkpoint", "onnx" or "" for any other file), in
        one line naming it (and what it would destroy), or None."""
        path = Path(path)
        if "\x00" in str(path):
            return f"{str(path)!r}: a path cannot hold a NUL character"
        real = real_path(path)
        for item, held, is_folder in self._held:
            if real == held:
                return (f"{path}: is {item.why} ({item.path}); flexunet never writes over what it reads; "
                        "choose another path")
            if is_folder and real.is_relative_to(held):
                return (f"{path}: lies in {item.why} ({item.path}); flexunet never writes into its inputs; "
                        "choose another folder")
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return f"{path}: {blocker} is a file, not a folder; choose another output folder"
        if path.is_dir():
            return f"{path}: is a folder; give a file name"
        held_kind = WEIGHT_KINDS.get(path.suffix.lower())
        if held_kind and held_kind != kind and os.path.lexists(path):
            writer = "training" if held_kind == "checkpoint" else "export"
            return f"{path}: is a weights file ({held_kind}); only {writer} replaces one; choose another path"
        if os.path.lexists(path) and not self.overwrite and not written_by_flexunet(path):
            return (f"{path}: exists and flexunet did not write it; choose another path, or pass --overwrite to "
                    "replace it")
        return None

    def problems(self, paths: Iterable[Path], kind: str = "") -> list[str]:
        return [p for p in dict.fromkeys(self.problem(Path(path), kind) for path in paths) if p is not None]


_GUARD: ContextVar[OutputGuard] = ContextVar("flexunet_output_guard", default=OutputGuard())  # noqa: B039 (frozen)


def current_guard() -> OutputGuard:
    return _GUARD.get()


@contextmanager
def guarded(protected: Iterable[Protected] = (), overwrite: bool | None = None) -> Iterator[OutputGuard]:
    """Within this block every write also refuses `protected`; `overwrite` (when given) replaces the enclosing
    choice. Blocks nest: a command's inputs add to what the CLI already protects."""
    outer = _GUARD.get()
    guard = replace(outer, protected=outer.protected + tuple(protected),
                    overwrite=outer.overwrite if overwrite is None else overwrite)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def check_outputs(paths: Iterable[Path], kind: str = "") -> None:
    """Raise OutputError, one line per refused path, before a command writes anything (`kind`: see problem)."""
    problems = current_guard().problems(paths, kind)
    if problems:
        raise OutputError("\n".join(problems))


def real_path(path: str | Path) -> Path:
    """`path` with `~` expanded and symlinks followed: what two paths are compared by."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a folder (the config given as an output folder)."""
    for parent in Path(path).parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


_MANIFESTS: dict[Path, tuple[int, int, dict[str, str]]] = {}  # folder -> (inode, bytes read, name -> tag)


def manifest_tags(folder: Path) -> dict[str, str]:
    """name -> tag of every file flexunet wrote into `folder` (the last line for a name wins). Read incrementally:
    the manifest only grows, so a folder of many files is not re-read for each one."""
    path = Path(folder) / MANIFEST
    try:
        info = os.stat(path)
    except OSError:
        return {}
    inode, done, tags = _MANIFESTS.get(path, (info.st_ino, 0, {}))
    if inode != info.st_ino or info.st_size < done:  # replaced (a run moved aside): read it again
        done, tags = 0, {}
    if info.st_size > done:
        try:
            with path.open("rb") as handle:
                handle.seek(done)
                data = handle.read(info.st_size - done)
        except OSError:
            return tags
        whole = data.rfind(b"\n") + 1  # a line being appended right now is read next time
        for line in data[:whole].decode("utf-8", errors="replace").splitlines():
            name, _, tag = line.partition("\t")
            if name:
                tags[name] = tag
        done += whole
    _MANIFESTS[path] = (info.st_ino, done, tags)
    return tags


def written_by_flexunet(path: Path) -> bool:
    """Whether flexunet wrote `path`: named in its folder's manifest, or inside a training run's folder."""
    path = Path(path)
    if (path.parent / RUN_MARKER).is_file():
        return True
    return path.name in manifest_tags(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line to a bookkeeping file (a manifest, an objects journal) in a single write, so processes
    appending to one file never interleave within a line and a kill loses at most the line being written."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None


def record_written(path: Path, tag: str = "") -> None:
    """Add `path` to its folder's manifest (appended: processes writing into one folder each add their lines)."""
    path = Path(path)
    append_line(path.parent / MANIFEST, f"{path.name}\t{tag}")


def make_folder(path: Path) -> Path:
    """Create `path` and its parents; a file in the way or a missing permission is a one-line OutputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: is a file, not a folder; choose another output folder") from None
    except OSError as exc:
        blocker = _file_in_the_way(path)
        if blocker is not None:
            raise OutputError(f"{path}: {blocker} is a file, not a folder; choose another output folder") from None
        raise output_error(path, exc) from None
    return path


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
    if exc.errno == errno.EFBIG:  # `ulimit -f`, or a file system's largest file
        return OutputError(f"{path}: cannot write, a file size limit was reached ({exc.strerror or exc}); earlier "
                           "files are kept. Raise the limit (ulimit -f) or write to another disk and run again")
    if exc.errno in _FULL:
        return OutputError(f"{path}: cannot write, the disk is full ({exc.strerror or exc}); earlier files are kept. "
                           "Free some space and run again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: cannot write there ({exc.strerror or exc}): the folder is read-only for you; "
                           "choose another output folder")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def _open_temp(fd: int) -> BinaryIO:
    """The temporary file as a buffered binary file (the one place tests put a simulated full disk)."""
    return os.fdopen(fd, "wb")


class _Recorded:
    """The temporary file as `write` sees it, keeping the first OSError a write or flush raised: a library that
    writes through it (torch.save's zip writer) may turn that error into its own RuntimeError ("unexpected pos")
    under a file size limit, and the user should still hear about the full disk, not the library's words."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)


def _refuse(path: Path, kind: str = "") -> None:
    problem = current_guard().problem(path, kind)
    if problem is not None:
        raise OutputError(problem)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], tag: str = "", kind: str = "") -> None:
    """Let `write` fill a temporary file in the same folder, flush it to disk, then rename it to `path`: a crash or a
    full disk leaves the old file or the new one, never half of one. Streaming into the file (torch.save of a
    checkpoint) needs no second copy of the bytes in memory. The file gets 0666 minus the umask (0644 under umask
    022), like any file `open()` creates; tempfile.mkstemp would leave 0600. The guard is asked first; the manifest
    names the file (with `tag`) before the rename, so a file that exists was always recorded. `kind` says what is
    written ("checkpoint" from training, "onnx" from export): only such a writer replaces a weights file."""
    path = Path(path)
    _refuse(path, kind)
    make_folder(path.parent)
    try:
        tmp = _temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise output_error(path, exc) from None
    recorded: _Recorded | None = None
    try:
        with _open_temp(fd) as file:
            recorded = _Recorded(file)
            write(recorded)  # type: ignore[arg-type]  # a BinaryIO in all but name
            file.flush()
            os.fsync(file.fileno())  # a full disk can surface only here, when the data reaches it
        record_written(path, tag)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        if recorded is not None and recorded.error is not None:
            raise output_error(path, recorded.error) from None
        raise


def atomic_write_bytes(path: Path, data: bytes, tag: str = "", kind: str = "") -> None:
    """`data` to `path`, whole or not at all (see atomic_write)."""
    atomic_write(path, lambda file: file.write(data), tag, kind)


def json_safe(value: object) -> object:
    """`value` as strict JSON takes it: NaN and infinities become null (JavaScript and jq reject the literals), numpy
    scalars plain numbers, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # np.float32, np.int64, np.bool_
        return json_safe(value.item())
    return value


def atomic_write_text(path: Path, text: str, tag: str = "") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), tag)


def produce_file(path: Path, produce: Callable[[Path], T], tag: str = "", kind: str = "") -> T:
    """For a library that writes a file itself (ONNX export, quantization, TIFF): `produce` writes a temporary path
    beside `path`, which is then renamed, as atomic_write does; returns what `produce` returns. A failure leaves no
    temporary file."""
    path = Path(path)
    _refuse(path, kind)
    make_folder(path.parent)
    tmp = _temp_name(path).with_suffix(path.suffix)  # some writers choose the format by the suffix
    try:
        made = produce(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        record_written(path, tag)
        os.replace(tmp, path)
        return made
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def place_file(source: Path, path: Path, link: bool) -> None:
    """`path` as a symbolic link to `source`, or a copy of it (split --files)."""
    path = Path(path)
    if link:
        _refuse(path)
        make_folder(path.parent)
        try:
            record_written(path)
            os.symlink(os.path.abspath(source), path)
        except OSError as exc:
            raise output_error(path, exc) from None
    else:
        atomic_write(path, lambda file: file.write(Path(source).read_bytes()))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def sha256_of(paths: Iterable[Path]) -> str:
    """One SHA-256 over the bytes of every file, in order, read in 1 MiB blocks: what a report's provenance records
    of the model files it used (an ONNX graph, an ensemble's checkpoints)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()
