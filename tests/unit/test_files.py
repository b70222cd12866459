"""Output files are whole or absent, honour the umask, and a full disk is a one-line error; output folders never
equal or contain inputs; training moves aside only its own runs, one training per model_dir at a time."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from flexunet.config.folders import overlap_problems
from flexunet.errors import OutputError
from flexunet.files import MANIFEST, atomic_write_bytes
from flexunet.runs.rundir import LOCK, MARKER, RunDir
from tests.conftest import disk_full_when


def disk_full_after(monkeypatch: pytest.MonkeyPatch, good_writes: int) -> None:
    """Every atomic write after the first `good_writes` files meets a full disk half-way through."""
    disk_full_when(monkeypatch, lambda name, count, of_this_file: count > good_writes)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_honours_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == mode


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    atomic_write_bytes(target, b"old" * 100, kind="checkpoint")
    disk_full_after(monkeypatch, 0)
    with pytest.raises(OutputError, match=r"last\.pt: cannot write, the disk is full") as info:
        atomic_write_bytes(target, b"new" * 100, kind="checkpoint")
    assert "\n" not in str(info.value)
    assert target.read_bytes() == b"old" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "last.pt"]


def test_overlap_names_both_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "A" / "images").mkdir(parents=True)
    (data / "x.png").write_bytes(b"")
    (tmp_path / "link").symlink_to(data / "A" / "images")
    inputs = [("[infer] images_dir", str(data / "A" / "images"))]
    same = overlap_problems([("c [infer] output_dir", tmp_path / "link")], inputs)
    assert same == [f"c [infer] output_dir {tmp_path / 'link'} is the same folder as [infer] images_dir "
                    f"{data / 'A' / 'images'}: its outputs would overwrite or move the inputs; choose another folder"]
    assert "contains [train] masks_dir" in overlap_problems(
        [("c [train] model_dir", tmp_path)], [("[train] masks_dir", str(data / "*" / "masks"))])[0]  # glob, no match yet
    assert "contains [infer] images_dir" in overlap_problems(
        [("c [infer] output_dir", data)], [("[infer] images_dir", str(data / "x.png"))])[0]  # a single file
    assert overlap_problems([("c [infer] output_dir", data / "out")], inputs) == []  # a new folder beside: fine
    assert overlap_problems([("c [infer] output_dir", data / "A" / "images" / "out")], inputs) == []


def run_dir(root: Path) -> RunDir:
    return RunDir(root / "models", root / "eval", root / "previews")


def test_only_marked_runs_are_moved_aside(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    run.prepare(resume=False)
    assert all((folder / MARKER).is_file() for folder in run.folders())
    (run.model_dir / "best.pt").write_bytes(b"w")
    moved = run.prepare(resume=False)
    assert [p.name.split("_")[0] for p in moved] == ["models"] and (moved[0] / "best.pt").is_file()
    (tmp_path / "eval" / MARKER).unlink()
    (tmp_path / "eval" / "thesis.docx").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"\[train\] eval_dir .*eval: not empty and not a flexunet run folder") as info:
        run.prepare(resume=False)
    assert "\n" not in str(info.value) and (tmp_path / "eval" / "thesis.docx").read_bytes() == b"mine"
    assert len(list(tmp_path.glob("eval_*_bak"))) == 0


def test_a_second_training_into_one_model_dir_is_refused(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    with run.locked():
        assert (run.lock_file.read_text().strip()) == str(os.getpid())
        with pytest.raises(OutputError, match=rf"another flexunet run \(pid {os.getpid()}\) is writing there"):
            with run_dir(tmp_path).locked():
                pass
        run.prepare(resume=False)  # the holder itself may prepare: the lock file does not count as content
        assert run.lock_file.is_file()
    assert not run.lock_file.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    run.model_dir.mkdir()
    (run.model_dir / LOCK).write_text("999999999\n")  # a pid no process has, and nobody holds the flock
    with run.locked():
        assert run.lock_file.read_text().strip() == str(os.getpid())


def test_moving_aside_keeps_the_held_lock_in_place(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run" / "models", tmp_path / "run", tmp_path / "run" / "previews")
    run.prepare(resume=False)
    (run.model_dir / "last.pt").write_bytes(b"w")
    with run.locked():
        moved = run.prepare(resume=False)
        assert run.lock_file.is_file() and len(moved) == 2
        with pytest.raises(OutputError, match="another flexunet run"):
            with RunDir(run.model_dir, run.eval_dir, run.preview_dir).locked():
                pass


def test_inspect_summary_is_whole_or_absent_and_honours_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    from flexunet.models.inspect import LayerRow, ModelSummary, write_summary

    summary = ModelSummary("flexunet", (1, 3, 32, 32), (1, 1, 32, 32), 10, 10, 100, (5, 5),
                           (LayerRow("conv", "Conv2d", (1, 1, 32, 32), 10),))
    target = tmp_path / "summary.txt"
    old = os.umask(0o027)
    try:
        write_summary(summary, target)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o640 and "conv   Conv2d" in target.read_text()
    earlier = target.read_bytes()
    disk_full_after(monkeypatch, 0)
    with pytest.raises(OutputError, match=r"summary\.txt: cannot write, the disk is full"):
        write_summary(summary, target)
    assert target.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "summary.txt"]


def test_two_trainings_sharing_only_eval_dir_are_kept_apart(tmp_path: Path) -> None:
    first = RunDir(tmp_path / "models_a", tmp_path / "eval", tmp_path / "previews_a")
    second = RunDir(tmp_path / "models_b", tmp_path / "eval", tmp_path / "previews_b")
    with first.locked():
        with pytest.raises(OutputError, match=r"\[train\] eval_dir .*eval: another flexunet run \(pid \d+\)") as info:
            with second.locked():
                pass
        assert "\n" not in str(info.value)
        assert not (tmp_path / "models_b" / LOCK).exists()  # a refused run holds no lock it took before
    with second.locked():  # released when the first ends
        pass


def test_locks_are_released_when_the_run_fails(tmp_path: Path) -> None:
    from flexunet.runs.rundir import locked_folders

    folders = {tmp_path / "out": "[infer] output_dir", tmp_path / "merged": "[infer] merged_dir"}
    with pytest.raises(RuntimeError):
        with locked_folders(folders):
            raise RuntimeError("a crash half-way")
    assert not any((folder / LOCK).exists() for folder in folders)
    with locked_folders(folders):
        with pytest.raises(OutputError, match=r"\[infer\] merged_dir .*merged: another flexunet run"):
            with locked_folders({tmp_path / "merged": "[infer] merged_dir"}):
                pass


def test_read_only_folders_and_files_in_the_way_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet.files import atomic_write_text, make_folder

    (tmp_path / "my.config").write_text("[model]\n")
    with pytest.raises(OutputError, match=r"my\.config is a file, not a folder") as info:
        make_folder(tmp_path / "my.config" / "masks")
    assert "\n" not in str(info.value)
    with pytest.raises(OutputError, match=r"my\.config is a file, not a folder"):
        atomic_write_text(tmp_path / "my.config" / "masks" / "a.png", "x")
    assert (tmp_path / "my.config").read_text() == "[model]\n"
    real_open = os.open

    def read_only(path, flags, *args):  # root ignores chmod, so a read-only folder is simulated at the system call
        if Path(path).parent == tmp_path / "ro" and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=r"ro/a\.txt: cannot write there \(Permission denied\): the folder is "
                                          r"read-only for you; choose another output folder"):
        atomic_write_text(tmp_path / "ro" / "a.txt", "x")
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_user_file_is_refused_and_overwrite_opts_in_but_never_for_inputs(tmp_path: Path) -> None:
    from flexunet.files import Protected, atomic_write_text, guarded

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt: exists and flexunet did not write it; choose another path, "
                                          r"or pass --overwrite to replace it"):
        atomic_write_text(tmp_path / "notes.txt", "flexunet's")
    atomic_write_text(tmp_path / "report.txt", "one")
    atomic_write_text(tmp_path / "report.txt", "two")  # its own file: replaced
    (tmp_path / "model.pt").write_bytes(b"weights")
    with guarded([Protected(tmp_path / "notes.txt", "the config file")], overwrite=True):
        with pytest.raises(OutputError, match=r"notes\.txt: is the config file \(.*notes\.txt\); flexunet never "
                                              r"writes over what it reads"):
            atomic_write_text(tmp_path / "notes.txt", "flexunet's")
        with pytest.raises(OutputError, match=r"model\.pt: is a weights file \(checkpoint\); only training"):
            atomic_write_text(tmp_path / "model.pt", "a summary")
        atomic_write_text(tmp_path / "other.txt", "x")
        (tmp_path / "user.csv").write_text("mine")
        atomic_write_text(tmp_path / "user.csv", "replaced, as asked")
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "report.txt").read_text() == "two" and (tmp_path / "user.csv").read_text() == "replaced, as asked"


def test_a_file_size_limit_during_torch_save_is_one_line_and_keeps_the_checkpoint(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    """torch.save's zip writer turns the write's EFBIG (`ulimit -f`) into its own RuntimeError ("unexpected pos"):
    the user still gets the one-line size-limit error, and the previous checkpoint stays."""
    import errno

    import torch

    from flexunet import files
    from flexunet.runs.checkpoint import load_checkpoint, save_checkpoint

    target = tmp_path / "last.pt"
    save_checkpoint(target, {"model": {"w": torch.zeros(10)}, "config": "[model]\n", "epoch": 1})

    from tests.conftest import TempFileWrapper

    class Limited(TempFileWrapper):
        written = 0

        def write(self, data) -> int:
            if self.written + len(data) > 1000:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            self.written += len(data)
            return self.file.write(data)

    real = files._open_temp
    monkeypatch.setattr(files, "_open_temp", lambda fd: Limited(real(fd)))
    with pytest.raises(OutputError, match=r"last\.pt: cannot write, a file size limit was reached") as info:
        save_checkpoint(target, {"model": {"w": torch.ones(100_000)}, "config": "[model]\n", "epoch": 2})
    assert "\n" not in str(info.value)
    assert load_checkpoint(target, torch.device("cpu"))["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_json_safe_writes_strict_json() -> None:
    import json
    import math

    import numpy as np

    from flexunet.files import json_safe

    value = {"a": math.nan, "b": [math.inf, np.float32(0.5), (np.int64(3), np.bool_(True))], "c": "x"}
    assert json.loads(json.dumps(json_safe(value), allow_nan=False)) == {"a": None, "b": [None, 0.5, [3, True]],
                                                                       "c": "x"}
