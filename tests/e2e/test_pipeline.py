"""train -> evaluate -> infer through the CLI on tiny synthetic data: files, headers, outcomes."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest
import torch

from tests.conftest import make_config, run_cli


def read_rows(path: Path) -> list[list[str]]:
    with path.open() as handle:
        return list(csv.reader(handle, skipinitialspace=True))


@pytest.fixture
def trained(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 8}})
    assert run_cli(monkeypatch, "train", str(config), "--quiet", "--device", "cpu") == 0
    return config


def test_training_writes_checkpoints_logs_and_previews(trained: Path) -> None:
    root = trained.parent
    for name in ("best.pt", "last.pt", "config.resolved.ini", "test.config"):
        assert (root / "models" / name).is_file(), name
    losses = read_rows(root / "eval" / "train_losses.csv")
    assert (root / "eval" / "train_losses.csv").read_text().splitlines()[0] == "epoch, loss, val_loss"
    assert [r[0] for r in losses[1:]] == [str(e) for e in range(1, 9)]  # numbered from 1, as the console
    assert (root / "eval" / "train_metrics.csv").read_text().splitlines()[0] == "epoch,iou_coef,val_iou_coef,"
    assert float(losses[-1][1]) < float(losses[1][1])  # the training loss went down
    assert (root / "eval" / "train_losses.png").stat().st_size > 1000
    assert len(list((root / "epoch_change_infer").glob("Epoch_8_*.png"))) == 2
    state = torch.load(root / "models" / "best.pt", weights_only=True)
    assert "[model]" in state["config"] and "model" in state


def test_evaluate_and_infer_outputs(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = trained.parent
    assert run_cli(monkeypatch, "evaluate", str(trained), "--quiet") == 0
    lines = (root / "eval" / "evaluation.csv").read_text().splitlines()
    assert lines[0].startswith("bce_dice_loss,") and lines[1].startswith("iou_coef,") and len(lines) == 2
    per_class = read_rows(root / "eval" / "per_class.csv")
    assert per_class[0][:5] == ["class", "dice", "iou", "precision", "recall"] and per_class[1][0] == "class_1"
    assert float(per_class[1][1]) > 0.5
    per_image = read_rows(root / "eval" / "per_image.csv")
    assert per_image[0][:2] == ["image", "dice_class_1"] and len(per_image) == 5
    assert run_cli(monkeypatch, "infer", str(trained), "--quiet") == 0
    masks = sorted((root / "out").glob("*.png"))
    assert len(masks) == 4 and len(list((root / "merged").glob("*.png"))) == 4
    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (32, 32) and set(mask.ravel().tolist()) <= {0, 255}


def test_same_seed_same_run_and_resume_continues(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = make_config(tmp_path / name, tiny_dataset, {"train": {"epochs": 3}})
        assert run_cli(monkeypatch, "train", str(config), "-q", "--seed", "5") == 0
        runs.append(read_rows(tmp_path / name / "eval" / "train_losses.csv"))
    assert runs[0] == runs[1]
    # resume: 2 epochs, then continue to 3 -> same log as the straight run, no duplicate rows
    (tmp_path / "c").mkdir()
    config = make_config(tmp_path / "c", tiny_dataset, {"train": {"epochs": 2}})
    assert run_cli(monkeypatch, "train", str(config), "-q", "--seed", "5") == 0
    assert run_cli(monkeypatch, "train", str(config), "-q", "--seed", "5", "--resume", "--set", "train.epochs=3") == 0
    assert read_rows(tmp_path / "c" / "eval" / "train_losses.csv") == runs[0]


def test_new_run_moves_the_old_one_aside(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = trained.parent
    old = (root / "models" / "best.pt").read_bytes()
    assert run_cli(monkeypatch, "train", str(trained), "-q", "--set", "train.epochs=1") == 0
    backups = list(root.glob("models_*_bak"))
    assert len(backups) == 1 and (backups[0] / "best.pt").read_bytes() == old
    assert list(root.glob("eval_*_bak"))


def test_user_errors_are_one_line_and_exit_2(trained: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    root = trained.parent
    capsys.readouterr()
    assert run_cli(monkeypatch, "train", str(trained), "--set", "train.epohcs=1") == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert out == ["error: test.config [train] epohcs: unknown key; did you mean 'epochs'?"]
    (root / "models" / "best.pt").write_bytes((root / "models" / "best.pt").read_bytes()[:1000])
    assert run_cli(monkeypatch, "evaluate", str(trained)) == 2
    assert "best.pt: not a readable flexunet checkpoint" in capsys.readouterr().err
    assert run_cli(monkeypatch, "train", str(trained), "--set", f"train.images_dir={root / 'missing'}") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: test.config [train] images_dir = {root / 'missing'}: no such folder"]  # names the section and key
    assert (root / "models" / "last.pt").is_file()  # a failed start never touches the finished run


def test_wrong_shaped_checkpoint_is_refused(trained: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    capsys.readouterr()
    assert run_cli(monkeypatch, "evaluate", str(trained), "--set", "model.base_filters=4") == 2
    assert "has shape" in capsys.readouterr().err


def test_generator_mode_augments_training_batches_only(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flexunet.augment.augmenter as augmenter_module

    calls: list[tuple[int, ...]] = []
    original = augmenter_module.Augmenter.__call__

    def spy(self, images, labels, generator):
        calls.append(tuple(images.shape))
        return original(self, images, labels, generator)

    monkeypatch.setattr(augmenter_module.Augmenter, "__call__", spy)
    config = make_config(tmp_path, tiny_dataset, {"model": {"generator": True},
                                                  "train": {"epochs": 2, "steps_per_epoch": 3, "validation_steps": 1}})
    assert run_cli(monkeypatch, "train", str(config), "-q") == 0
    assert len(calls) == 2 * 3 and all(shape == (4, 3, 32, 32) for shape in calls)  # 3 steps per epoch, train only
    rows = read_rows(tmp_path / "eval" / "train_losses.csv")
    assert len(rows) == 3
