"""A user's files are never lost: through the CLI, outputs never overwrite inputs, a full disk stops with one line and
keeps earlier outputs, `infer --resume` redoes broken outputs, every file honours the umask, and `--images` takes
files and globs without two inputs ever sharing one mask."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.runs.checkpoint import load_checkpoint
from flexunet.runs.rundir import MARKER, run_dir_for
from tests.conftest import disk_full_when, make_config, run_cli, save_random_checkpoint


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def listed(folder: Path) -> list[str]:
    """The names in `folder` a user sees: flexunet's hidden bookkeeping (manifest, objects journal) left out."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".flexunet-"))


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def checkpointed(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A config whose best.pt holds a tiny FlexUNet with random weights ([infer] images_dir: the 4 test images)."""
    config = make_config(tmp_path, tiny_dataset)
    save_random_checkpoint(config)
    return config


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_infer_into_its_own_images_folder_is_refused(checkpointed: Path, tiny_dataset: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    images = tiny_dataset / "test" / "images"
    before = digest(images)
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--output", str(images)) == 2
    assert stderr_lines(capsys) == [
        f"error: test.config [infer] output_dir {images} is the same folder as [infer] images_dir {images}: its "
        "outputs would overwrite or move the inputs; choose another folder"]
    assert digest(images) == before and not (images.parent / "images_merged").exists()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--merged", str(tiny_dataset / "train")) == 2
    assert "[infer] merged_dir" in capsys.readouterr().err and not (checkpointed.parent / "out").exists()
    assert run_cli(monkeypatch, "evaluate", str(checkpointed), "-q", "--set", f"train.eval_dir={tiny_dataset}") == 2
    assert "[train] eval_dir" in capsys.readouterr().err and digest(tiny_dataset / "test" / "masks")


def test_train_never_moves_a_folder_it_did_not_make(tiny_dataset: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1}})
    capsys.readouterr()
    # model_dir = the dataset's folder: today it was moved aside, dataset and all
    assert run_cli(monkeypatch, "train", str(config), "-q", "--set", f"train.model_dir={tiny_dataset}") == 2
    assert stderr_lines(capsys) == [
        f"error: test.config [train] model_dir {tiny_dataset} contains [train] images_dir "
        f"{tiny_dataset / 'train' / 'images'}: its outputs would overwrite or move the inputs; choose another folder"]
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("years of work")
    assert run_cli(monkeypatch, "train", str(config), "-q", "--set", f"train.eval_dir={home}") == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and f"[train] eval_dir {home}: not empty and not a flexunet run folder" in err[0]
    assert (home / "docs" / "thesis.txt").read_text() == "years of work" and not list(tmp_path.glob("home_*"))
    assert not (tmp_path / "models").exists()  # refused before anything was written
    assert tiny_dataset.is_dir() and not list(tmp_path.glob("data_*"))


def test_a_second_training_into_a_locked_model_dir_is_refused(tiny_dataset: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1}})
    run = run_dir_for(load_config(config))
    capsys.readouterr()
    with run.locked():
        assert run_cli(monkeypatch, "train", str(config), "-q", "--device", "cpu") == 2
    assert stderr_lines(capsys) == [
        f"error: [train] model_dir {run.model_dir}: another flexunet run (pid {os.getpid()}) is writing there; wait for it "
        "to finish, or point [train] model_dir at another folder"]
    (run.model_dir / ".flexunet-lock").write_text("4194999\n")  # left by a killed run: taken over
    assert run_cli(monkeypatch, "train", str(config), "-q", "--device", "cpu") == 0
    assert not (run.model_dir / ".flexunet-lock").exists() and (run.model_dir / MARKER).is_file()


def test_disk_full_during_infer_stops_with_one_line_and_resume_finishes(checkpointed: Path,
                                                                       monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    root = checkpointed.parent
    disk_full_when(monkeypatch, lambda name, files, calls: files > 3)  # mask 0, overlay 0, mask 1, then full
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q") == 2
    err = stderr_lines(capsys)
    assert err == [f"error: {root / 'merged' / 'img_001.png'}: cannot write, the disk is full (No space left on device); "
                   "earlier files are kept. Free some space and run again with --resume (1 of 4 images are finished)"]
    assert listed(root / "out") == ["img_000.png", "img_001.png"]  # no temp, no half file
    assert listed(root / "merged") == ["img_000.png"]
    assert cv2.imread(str(root / "out" / "img_001.png")) is not None
    monkeypatch.undo()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--resume") == 0
    assert "wrote 3 masks" in capsys.readouterr().out  # img_001's overlay was missing: redone with the rest
    for folder in ("out", "merged"):
        assert [cv2.imread(str(p)) is not None for p in sorted((root / folder).glob("*.png"))] == [True] * 4
    assert [name for name in listed(root / "out") if not name.endswith(".png")] == ["counts.csv", "objects.csv"]


def test_resume_redoes_truncated_masks_and_missing_overlays(checkpointed: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys) -> None:
    root = checkpointed.parent
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q") == 0
    whole = (root / "out" / "img_002.png").read_bytes()
    (root / "out" / "img_002.png").write_bytes(whole[: len(whole) // 2])  # e.g. a copy cut short
    (root / "merged" / "img_003.png").unlink()
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--resume") == 0
    assert "wrote 2 masks" in capsys.readouterr().out
    assert (root / "out" / "img_002.png").read_bytes() == whole and (root / "merged" / "img_003.png").is_file()


def test_disk_full_during_training_keeps_the_last_checkpoint(tiny_dataset: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 3}})
    disk_full_when(monkeypatch, lambda name, files, calls: name.startswith(".last.pt.") and calls == 2)
    capsys.readouterr()
    assert run_cli(monkeypatch, "train", str(config), "-q", "--device", "cpu") == 2
    err = stderr_lines(capsys)
    assert err == [f"error: {tmp_path / 'models' / 'last.pt'}: cannot write, the disk is full (No space left on device); "
                   "earlier files are kept. Free some space and run again with --resume (last.pt holds the last saved "
                   "epoch)"]
    assert load_checkpoint(tmp_path / "models" / "last.pt")["epoch"] == 1  # epoch 1's checkpoint, whole
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.endswith(".tmp")]


def test_every_output_file_honours_the_umask(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             umask_022: None) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1}})
    for verb in ("train", "evaluate", "infer"):
        assert run_cli(monkeypatch, verb, str(config), "-q", "--device", "cpu") == 0
    files = [p for name in ("models", "eval", "epoch_change_infer", "out", "merged") for p in (tmp_path / name).rglob("*")
             if p.is_file()]
    names = {p.name for p in files}
    assert {"best.pt", "last.pt", "history.csv", "train_losses.png", "per_image.csv", "report.html",
            "img_000.png"} <= names
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.full((20, 24, 3), 90, np.uint8))


def test_images_option_takes_a_file_a_file_glob_and_a_folder_glob(checkpointed: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys) -> None:
    root = checkpointed.parent
    write_images(root / "scans" / "a" / "images", ["p.png", "q.tif"])
    write_images(root / "scans" / "b" / "images", ["r.png"])
    cases = {
        "file": (str(root / "scans" / "a" / "images" / "q.tif"), ["q.png"]),
        "file_glob": (str(root / "scans" / "*" / "images" / "*.png"), ["p.png", "r.png"]),
        "folder_glob": (str(root / "scans" / "*" / "images"), ["p.png", "q.png", "r.png"]),
    }
    for name, (images, expected) in cases.items():
        assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--images", images, "--output", str(root / name)) == 0
        assert listed(root / name) == sorted(expected + ["counts.csv", "objects.csv"]), name
        assert listed(root / f"{name}_merged") == expected, name  # overlays follow --output
        assert cv2.imread(str(root / name / expected[0]), cv2.IMREAD_UNCHANGED).shape == (20, 24)
    assert not (root / "merged").exists()  # the config's merged_dir was not used by any --output pass
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--images", str(root / "scans" / "a" / "images"),
                   "--output", str(root / "o"), "--merged", str(root / "m")) == 0
    assert listed(root / "m") == ["p.png", "q.png"] and not (root / "o_merged").exists()


@pytest.mark.parametrize("layout", [{"a": ["x.png"], "b": ["x.png"]}, {"a": ["x.png", "x.jpg"]}])
def test_two_inputs_with_one_stem_are_refused_before_writing(checkpointed: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys, layout: dict[str, list[str]]) -> None:
    root = checkpointed.parent
    for folder, names in layout.items():
        write_images(root / "in" / folder, names)
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--images", str(root / "in" / "*")) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and "both would be written as x.png" in err[0], err
    assert not (root / "out").exists() and not (root / "merged").exists()
    shutil.rmtree(root / "in")


def test_a_full_disk_outside_flexunets_writers_is_one_line_too(checkpointed: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys) -> None:
    import flexunet.infer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/events.out")  # e.g. TensorBoard's writer

    monkeypatch.setattr(flexunet.infer, "infer_from_config", full)
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q") == 2
    assert stderr_lines(capsys) == ["error: /data/events.out: cannot write, the disk is full (No space left on device); "
                                    "earlier files are kept. Free some space and run again"]
