"""Scale out and stay safe: torchrun/DDP parity, SIGKILL + resume, SIGTERM, NaN loss."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch
from torch import Tensor

from flexunet.config import load_config
from flexunet.errors import TrainingError
from flexunet.runs.checkpoint import first_nonfinite, load_checkpoint
from flexunet.train import train_from_config
from tests.conftest import make_config, write_disc_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def history(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    """The seed's bce_dice_loss is batch-global (Dice sums over the whole batch), so the mean of two half-batch losses
    is not the full-batch loss (0.6869 vs 0.6835 after 2 epochs before the fix): the loss is taken on the gathered
    batch. 5 validation pairs leave one process without a share of the last validation batch."""
    data = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("valid", 5, 1)):
        write_disc_pairs(data / split, n, seed=seed)
    config = make_config(tmp_path, data, {"train": {"epochs": 2, "epoch_change_infer": False},
                                          "model": {"loss": "bce_dice_loss", "clipvalue": None}})
    single = subprocess.run([sys.executable, "-m", "flexunet", "train", str(config), "-q"], env=ENV, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "flexunet", "train", str(config), "-q", "--set", "train.model_dir=ddp_models",
                          "--set", "train.eval_dir=ddp_eval"], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    one, two = history(tmp_path / "eval" / "history.csv"), history(tmp_path / "ddp_eval" / "history.csv")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in a.keys() - {"seconds", "images_per_s"}:  # loss, val_loss, seed metrics, Dice/IoU
            assert b[key] == pytest.approx(a[key], rel=2e-5, abs=1e-6), key  # history.csv keeps 6 digits
    assert not (tmp_path / "ddp_models" / "rank1").exists() and (tmp_path / "ddp_models" / "best.pt").is_file()


def test_steps_per_epoch_and_a_time_budget_under_torchrun(tmp_path: Path) -> None:
    """`flexunet init` writes steps_per_epoch; torchrun refused it ("not supported under torchrun"). Two processes
    now draw the one-process samples and share them, so the history matches; a time budget ends both together."""
    data = tmp_path / "data"
    for split, n, seed in (("train", 10, 0), ("valid", 4, 1)):
        write_disc_pairs(data / split, n, seed=seed)
    config = make_config(tmp_path, data, {"train": {"epochs": 2, "epoch_change_infer": False, "steps_per_epoch": 4},
                                          "model": {"loss": "bce_dice_loss", "clipvalue": None}})
    single = subprocess.run([sys.executable, "-m", "flexunet", "train", str(config), "-q"], env=ENV, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "flexunet", "train", str(config), "-q"]
    ddp = subprocess.run([*torchrun, "--set", "train.model_dir=ddp_models", "--set", "train.eval_dir=ddp_eval"],
                         env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    one, two = history(tmp_path / "eval" / "history.csv"), history(tmp_path / "ddp_eval" / "history.csv")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=2e-5, abs=1e-6), key
    budget = subprocess.run([*torchrun, "--budget", "12s", "--set", "train.epochs=10000", "--set",
                             "train.model_dir=budget_models", "--set", "train.eval_dir=budget_eval"],
                            env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert budget.returncode == 0, budget.stdout + budget.stderr
    assert (tmp_path / "budget_models" / "best.pt").is_file()
    assert len(history(tmp_path / "budget_eval" / "history.csv")) >= 2


def test_sigkill_at_any_point_then_resume(tmp_path: Path, tiny_dataset: Path) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 40, "epoch_change_infer": False}})
    proc = subprocess.Popen([sys.executable, "-m", "flexunet", "train", str(config), "-q"], env=ENV, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    losses = tmp_path / "eval" / "train_losses.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not losses.is_file() or len(losses.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / "models" / name, weights_only=True)  # never half-written
        assert "model" in state
    done = int(torch.load(tmp_path / "models" / "last.pt", weights_only=True)["epoch"])
    resumed = subprocess.run([sys.executable, "-m", "flexunet", "train", str(config), "-q", "--resume",
                              "--set", f"train.epochs={done + 3}"], env=ENV, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    epochs = [int(line.split(",")[0]) for line in losses.read_text().splitlines()[1:]]
    assert epochs == list(range(1, done + 4))  # last.pt's epoch = epochs finished; continues, no gap, no duplicate row
    assert [int(r["epoch"]) for r in history(tmp_path / "eval" / "history.csv")] == epochs


def test_sigterm_saves_and_exits_cleanly(tmp_path: Path, tiny_dataset: Path) -> None:
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 200, "epoch_change_infer": False}})
    proc = subprocess.Popen([sys.executable, "-m", "flexunet", "train", str(config)], env=ENV, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "models" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not last.is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert torch.load(tmp_path / "models" / "interrupted.pt", weights_only=True)["model"]
    assert torch.load(last, weights_only=True)["model"]


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path: Path, tiny_dataset: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(make_config(tmp_path, tiny_dataset, {"train": {"epochs": 3, "epoch_change_infer": False}}))
    train_from_config(cfg, device="cpu", quiet=True)
    before = (tmp_path / "models" / "last.pt").read_bytes()
    import flexunet.losses as losses

    monkeypatch.setitem(losses.LOSSES, "bce_dice_loss", lambda logits, labels: logits.sum() * float("nan"))
    longer = load_config(make_config(tmp_path, tiny_dataset, {"train": {"epochs": 5, "epoch_change_infer": False}}))
    with pytest.raises(TrainingError, match="loss became nan"):
        train_from_config(longer, device="cpu", quiet=True, resume=True)
    assert (tmp_path / "models" / "last.pt").read_bytes() == before


def nan_gradient_at_step(step: int) -> Callable[[Tensor, Tensor], Tensor]:
    """bce_dice_loss whose value stays finite but whose gradient is NaN at training step `step` (1-based): the
    weights diverge without the loss check seeing it before the epoch ends."""
    from flexunet.losses import bce_dice_loss

    steps: list[int] = []

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        value = bce_dice_loss(logits, labels)
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == step:
                value = value + 0 * torch.sqrt(logits - logits.detach()).sum()  # d sqrt(x)/dx at 0: 0 * inf = NaN
        return value

    return loss


def test_nan_weights_after_an_epoch_stop_training_and_keep_the_good_checkpoint(tmp_path: Path, tiny_dataset: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import flexunet.losses as losses

    cfg = load_config(make_config(tmp_path, tiny_dataset, {"train": {"epochs": 3, "epoch_change_infer": False}}))
    # 16 pairs / batch 4: step 12 is the last of epoch 3
    monkeypatch.setitem(losses.LOSSES, "bce_dice_loss", nan_gradient_at_step(3 * 4))
    with pytest.raises(TrainingError, match=r"epoch 3: weight .* became NaN/Inf.*last\.pt: the earlier file is kept "
                                            r"\(from epoch 2\)"):
        train_from_config(cfg, device="cpu", quiet=True)
    monkeypatch.undo()
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(tmp_path / "models" / name)
        assert first_nonfinite(state["model"]) is None
    assert int(load_checkpoint(tmp_path / "models" / "last.pt")["epoch"]) == 2  # epochs numbered from 1
    resumed = train_from_config(cfg, device="cpu", quiet=True, resume=True)  # the kept file resumes
    assert resumed.epochs_run == 1 and [int(r["epoch"]) for r in resumed.history] == [1, 2, 3]


def interrupt_at_step(step: int) -> Callable[[Tensor, Tensor], Tensor]:
    """bce_dice_loss that raises KeyboardInterrupt (Ctrl-C) at training step `step` (1-based)."""
    from flexunet.losses import bce_dice_loss

    steps: list[int] = []

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == step:
                raise KeyboardInterrupt
        return bce_dice_loss(logits, labels)

    return loss


def comparable(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def test_interrupted_and_resumed_run_is_the_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout draws from the global RNG, augmentation from its own generator, and the validation masks are inverted
    so val_loss only rises after epoch 1: early stopping and the plateau reducer are counting when Ctrl-C comes, and
    each of RNG, reducer and early-stopping state must be restored for the runs to agree."""
    import flexunet.losses as losses

    data = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("valid", 4, 1)):
        write_disc_pairs(data / split, n, seed=seed)
    for mask in (data / "valid" / "masks").iterdir():
        cv2.imwrite(str(mask), 255 - cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE))
    sections = {"model": {"dropout_rate": 0.3, "generator": True, "learning_rate": 0.03},
                "train": {"epochs": 9, "epoch_change_infer": False, "patience": 5, "learning_rate_reducer": True,
                          "reducer_patience": 2, "reducer_factor": 0.5}}
    results = {}
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
        cfg = load_config(make_config(tmp_path / name, data, sections))
        if name == "resumed":
            monkeypatch.setitem(losses.LOSSES, "bce_dice_loss", interrupt_at_step(4 * 4 + 2))  # epoch 5, 2nd step
            with pytest.raises(KeyboardInterrupt):
                train_from_config(cfg, device="cpu", quiet=True)
            monkeypatch.undo()
            at_stop = load_checkpoint(tmp_path / name / "models" / "last.pt")
            assert int(at_stop["epoch"]) == 4  # four finished epochs
            # what the test relies on: both counters are running and the lr was already lowered when Ctrl-C came
            assert at_stop["early_stopping"]["wait"] > 0 and at_stop["reducer"]["wait"] > 0
            assert at_stop["optimizer"]["param_groups"][0]["lr"] < 0.03
            results[name] = train_from_config(cfg, device="cpu", quiet=True, resume=True)
        else:
            results[name] = train_from_config(cfg, device="cpu", quiet=True)
    straight, resumed = results["straight"], results["resumed"]
    # ... and after the resume the lr is lowered again and early stopping ends the run before [train] epochs
    assert straight.stopped_early and 4 < len(straight.history) < 9
    assert straight.history[-1]["lr"] < straight.history[3]["lr"]
    assert resumed.stopped_early and resumed.epochs_run == len(straight.history) - 4
    assert resumed.best_epoch == straight.best_epoch
    assert comparable(resumed.history[4:]) == comparable(straight.history[4:])  # the epochs after the resume, exact
    assert comparable(history(tmp_path / "resumed" / "eval" / "history.csv")) == comparable(
        history(tmp_path / "straight" / "eval" / "history.csv"))
    for name in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / run / "models" / name) for run in ("straight", "resumed"))
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name  # bitwise
    a, b = (load_checkpoint(tmp_path / run / "models" / "last.pt") for run in ("straight", "resumed"))
    assert a["early_stopping"] == b["early_stopping"] and a["reducer"] == b["reducer"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]


def test_resume_with_a_changed_learning_rate_and_optimizer_uses_and_records_the_new_values(
        tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 2, "epoch_change_infer": False}})
    train_from_config(load_config(path), device="cpu", quiet=True)
    changed = load_config(path, ["train.epochs=3", "model.learning_rate=0.001", "model.optimizer=AdamW",
                                 "train.batch_size=8"])
    capsys.readouterr()
    result = train_from_config(changed, device="cpu", resume=True)
    out = capsys.readouterr().out
    assert "test.config [model] learning_rate = 0.001, last.pt was trained with 0.01: resuming with 0.001" in out
    assert "[model] optimizer = 'AdamW', last.pt was trained with 'Adam': resuming with 'AdamW'" in out
    assert "[train] batch_size = 8, last.pt was trained with 4: resuming with 8" in out
    assert "epochs" not in out.split("resuming at")[0]  # only settings that change how training goes on
    assert result.history[-1]["lr"] == 0.001  # history.csv records the rate used
    last = load_checkpoint(tmp_path / "models" / "last.pt")
    group = last["optimizer"]["param_groups"][0]
    assert group["lr"] == 0.001 and group["weight_decay"] == 0.004  # AdamW's default decay, not Adam's 0
    assert "learning_rate = 0.001" in last["config"] and "learning_rate = 0.001" in (
        tmp_path / "models" / "config.resolved.ini").read_text()


def test_quiet_resume_still_says_which_learning_rate_is_used(tmp_path: Path, tiny_dataset: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet hides progress and epoch lines, never the note that the resumed run uses another learning rate."""
    path = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1, "epoch_change_infer": False}})
    train_from_config(load_config(path), device="cpu", quiet=True)
    capsys.readouterr()
    train_from_config(load_config(path, ["train.epochs=2", "model.learning_rate=0.001"]), device="cpu", quiet=True,
                      resume=True)
    out = capsys.readouterr().out
    assert "test.config [model] learning_rate = 0.001, last.pt was trained with 0.01: resuming with 0.001" in out
    assert "epoch 2/2" not in out  # the rest stays quiet


def test_folds_under_torchrun_match_one_process_and_choose_out_of_fold(tmp_path: Path) -> None:
    """`train --folds` under torchrun: each fold is the one-process run (same assignment, same history), and the
    out-of-fold `[postprocess] auto` choice (rank 0's) is made at the end over both folds."""
    data = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("valid", 5, 1)):
        write_disc_pairs(data / split, n, seed=seed)
    config = make_config(tmp_path, data, {"train": {"epochs": 2, "epoch_change_infer": False},
                                          "model": {"loss": "bce_dice_loss", "clipvalue": None}})
    single = subprocess.run([sys.executable, "-m", "flexunet", "train", str(config), "--folds", "2", "--fold", "0",
                             "-q"], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "flexunet", "train", str(config), "--folds", "2", "-q", "--set", "postprocess.auto=True",
                          "--set", "train.model_dir=ddp_models", "--set", "train.eval_dir=ddp_eval"],
                         env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert (tmp_path / "ddp_models" / "folds.csv").read_text() == (tmp_path / "models" / "folds.csv").read_text()
    one, two = (history(tmp_path / e / "fold_0" / "history.csv") for e in ("eval", "ddp_eval"))
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in a.keys() - {"seconds", "images_per_s"}:
            assert b[key] == pytest.approx(a[key], rel=2e-5, abs=1e-6), key
    choice = json.loads((tmp_path / "ddp_models" / "postprocess.json").read_text())
    assert choice["split"] == "out-of-fold" and choice["images"] == 21
    assert (tmp_path / "ddp_models" / "fold_1" / "best.pt").is_file()
    assert not list((tmp_path / "ddp_models").rglob("rank1"))
