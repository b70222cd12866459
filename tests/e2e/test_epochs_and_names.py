"""A 2-epoch tiny run read back from every file and message: epochs are numbered 1 and 2 everywhere, the
progress display has a validation bar and a run-level ETA, and [mask] class_names head every table."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flexunet.train.schedule import EarlyStopping
from tests.conftest import make_config, run_cli, write_disc_pairs


class RecordedProgress:
    """Stands in for rich's Progress: records each task's description, total, advances and fields."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []

    def add_task(self, description: str, total: int | None = None, **fields: object) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0, **fields})
        return len(self.tasks) - 1

    def advance(self, task: int, steps: float = 1) -> None:
        self.tasks[task]["completed"] += steps

    def update(self, task: int, **fields: object) -> None:
        self.tasks[task].update(fields)

    def remove_task(self, task: int) -> None:
        self.tasks[task]["removed"] = True


class StopAfterTwo(EarlyStopping):
    """Early stopping that fires at the second epoch, so its message is part of the run."""

    def update(self, value: float) -> bool:
        self.calls = getattr(self, "calls", 0) + 1
        return super().update(value) or self.calls == 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train (3 epochs asked, early stopping after 2), then evaluate, with class names ["background", "disc"]."""
    root = tmp_path_factory.mktemp("readable")
    for split, n, seed in (("train", 8, 0), ("valid", 4, 1), ("test", 4, 2)):
        write_disc_pairs(root / "data" / split, n, seed=seed)
    config = make_config(root, root / "data", {"train": {"epochs": 3, "patience": 1},
                                                "mask": {"class_names": ["background", "disc"]}})
    progress = RecordedProgress()

    @contextlib.contextmanager
    def recorded(quiet: bool) -> Iterator[RecordedProgress]:
        yield progress

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr("flexunet.train.progress_bars", recorded)
        mp.setattr("flexunet.train.loop.EarlyStopping", StopAfterTwo)
        assert run_cli(mp, "train", str(config), "--device", "cpu") == 0
        train_out = out.getvalue()
        assert run_cli(mp, "evaluate", str(config), "--device", "cpu", "--examples", "1") == 0
    return {"root": root, "train_out": train_out, "eval_out": out.getvalue()[len(train_out):], "progress": progress}


def first_column(path: Path) -> list[str]:
    with path.open() as handle:
        return [row[0] for row in csv.reader(handle, skipinitialspace=True)][1:]


def test_every_file_and_message_numbers_epochs_from_1(run: dict) -> None:
    root, out = run["root"], run["train_out"]
    for name in ("history.csv", "train_losses.csv", "train_metrics.csv"):
        assert [float(v) for v in first_column(root / "eval" / name)] == [1, 2], name
    previews = sorted(p.name.split("_")[1] for p in (root / "epoch_change_infer").glob("Epoch_*.png"))
    assert previews == ["1", "1", "2", "2"]  # two preview images per epoch
    assert re.findall(r"^epoch (\d)/3 ", out, re.M) == ["1", "2"]
    last = torch.load(root / "models" / "last.pt", weights_only=True)
    best = torch.load(root / "models" / "best.pt", weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] == last["best_epoch"] and best["epoch"] in (1, 2)
    marked = [int(m) for m in re.findall(r"^epoch (\d)/3 .*\[best\]", out, re.M)]
    assert marked[-1] == best["epoch"]
    assert f"early stopping after epoch 2: no improvement of val_loss for 1 epochs; best epoch {best['epoch']}" in out
    assert f"trained 2 epochs; best epoch {best['epoch']} " in out
    history = list(csv.DictReader((root / "eval" / "history.csv").open()))
    assert min(history, key=lambda r: float(r["val_loss"]))["epoch"] == str(best["epoch"])


def test_progress_has_a_validation_bar_and_a_run_eta(run: dict) -> None:
    tasks = {t["description"]: t for t in run["progress"].tasks}
    for number in (1, 2):
        validating = tasks[f"validating {number}/3"]
        assert validating["total"] == 4 and validating["completed"] == 4 and validating["removed"]
    whole = tasks["run"]
    assert whole["total"] == 3 and whole["completed"] == 2 and re.fullmatch(r"ETA \d+s|ETA \dm \d\ds", whole["eta"])
    assert re.search(r"^epoch 1/3 .*  ETA \d", run["train_out"], re.M)  # epoch lines say how long the run has left


def test_class_names_head_the_console_csv_json_and_report(run: dict) -> None:
    root, out = run["root"], run["eval_out"]
    assert re.search(r"^disc: dice \d\.\d{4} ", out, re.M) and "class_1" not in out
    assert re.search(r"best epoch \d \(val_loss \d\.\d{4}; val Dice disc \d\.\d{4}\)", run["train_out"])
    assert first_column(root / "eval" / "per_class.csv") == ["disc"]
    header = (root / "eval" / "per_image.csv").read_text().splitlines()[0].split(",")
    assert "dice_disc" in header and "hd95_disc" in header and not any("class_1" in h for h in header)
    assert list(json.loads((root / "eval" / "metrics.json").read_text())["per_class"]) == ["disc"]
    page = (root / "eval" / "report.html").read_text()
    assert 'data-class="disc"' in page and "class_1" not in page
    assert re.search(r'id="summary" class="summary">On 4 test images the model outlines disc with a Dice of', page)


def test_resume_continues_with_the_next_epoch_number(run: dict, tmp_path: Path) -> None:
    """last.pt's "epoch" is the number of finished epochs: the resumed run starts with epoch 3 and writes row 3."""
    root = tmp_path / "copy"
    shutil.copytree(run["root"], root)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        assert run_cli(mp, "train", str(root / "test.config"), "--device", "cpu", "--resume") == 0
    assert "resuming at epoch 3 from" in out.getvalue() and re.findall(r"^epoch (\d)/3 ", out.getvalue(), re.M) == ["3"]
    for name in ("history.csv", "train_losses.csv", "train_metrics.csv"):
        assert [float(v) for v in first_column(root / "eval" / name)] == [1, 2, 3], name
    assert torch.load(root / "models" / "last.pt", weights_only=True)["epoch"] == 3
