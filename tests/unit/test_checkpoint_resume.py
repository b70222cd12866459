"""best.pt/last.pt are replaced whole or not at all (a save that dies halfway, or weights that hold NaN/Inf, leave
the previous files intact and loadable), and what --resume finds changed since last.pt."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import flexunet.runs.checkpoint as checkpoint
from flexunet.errors import CheckpointError, OutputError
from flexunet.runs.checkpoint import load_checkpoint, save_checkpoint
from flexunet.runs.rundir import RunDir
from flexunet.train.state import TrainState
from flexunet.train.schedule import EarlyStopping, PlateauReducer


class WriteFailed(OSError):
    """The disk filled up (or the process was stopped) in the middle of writing a checkpoint."""


def make_state(tmp_path: Path) -> TrainState:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    optim = torch.optim.Adam(model.parameters())
    run = RunDir(tmp_path / "models", tmp_path / "eval", tmp_path / "previews")
    return TrainState(model, optim, EarlyStopping(3), PlateauReducer(optim, 0.5, 2), run, {"config": "[model]\n"})


def save_epoch(state: TrainState, epoch: int) -> None:
    state.save(epoch, {"epoch": epoch, "val_loss": 1.0 / (epoch + 1)}, improved=True)


def half_written_torch_save(fail_at_call: int):
    """A torch.save that, on call number `fail_at_call`, writes half of its bytes to its target, then raises."""
    real_save, calls = torch.save, []

    def save(obj: object, target: object, *args: object, **kwargs: object) -> None:
        calls.append(target)
        if len(calls) != fail_at_call:
            return real_save(obj, target, *args, **kwargs)
        whole = io.BytesIO()
        real_save(obj, whole, *args, **kwargs)
        data = whole.getvalue()[: len(whole.getvalue()) // 2]
        if isinstance(target, (str, os.PathLike)):
            Path(target).write_bytes(data)
        else:
            target.write(data)
        raise WriteFailed("no space left on device")

    return save


def failing_fsync(fd: int) -> None:
    raise WriteFailed("no space left on device")


def snapshot(state: TrainState) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (state.run.best, state.run.last)}


@pytest.mark.parametrize("fault", ["torch.save dies in best.pt", "torch.save dies in last.pt", "fsync fails"])
def test_a_save_that_dies_halfway_keeps_the_previous_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  fault: str) -> None:
    state = make_state(tmp_path)
    save_epoch(state, 0)
    before = snapshot(state)
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(1.0)  # the next save has different bytes
    if fault == "fsync fails":
        monkeypatch.setattr(os, "fsync", failing_fsync)
    else:
        monkeypatch.setattr(torch, "save", half_written_torch_save(1 if "best" in fault else 2))
    with pytest.raises((WriteFailed, OutputError)):  # flexunet's writer turns a failed write into one line
        save_epoch(state, 1)
    monkeypatch.undo()
    after = snapshot(state)
    if fault != "torch.save dies in last.pt":  # there best.pt was written whole before last.pt failed
        assert after["best.pt"] == before["best.pt"]
    assert after["last.pt"] == before["last.pt"]
    for path in (state.run.best, state.run.last):
        assert "model" in load_checkpoint(path)
    left = sorted(p.name for p in state.run.model_dir.iterdir() if p.name != ".flexunet-files")  # the manifest stays
    assert left == ["best.pt", "last.pt"]  # no temporary left behind


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_never_replace_a_checkpoint(tmp_path: Path, bad: float) -> None:
    state = make_state(tmp_path)
    save_epoch(state, 1)  # epochs are numbered from 1 in checkpoints, as in every file and message
    before = snapshot(state)
    with torch.no_grad():
        state.model[1].running_var[2] = bad  # a buffer, not only parameters
    with pytest.raises(CheckpointError, match=r"last\.pt.*1\.running_var.*(nan|inf).*kept") as caught:
        save_checkpoint(state.run.last, {"model": state.weights(), "config": "", "epoch": 2})
    assert "epoch 1" in str(caught.value)  # what the kept file holds, numbered as the training log prints it
    with pytest.raises(CheckpointError, match=r"best\.pt"):
        save_epoch(state, 2)
    assert snapshot(state) == before
    assert int(load_checkpoint(state.run.last)["epoch"]) == 1


def test_nan_weights_with_no_earlier_checkpoint_say_nothing_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match="no earlier checkpoint") as caught:
        save_checkpoint(path, {"model": {"w": torch.tensor([1.0, float("nan")])}, "config": "", "epoch": 0})
    assert "kept" not in str(caught.value) and not path.exists()


def test_integer_and_finite_weights_are_saved(tmp_path: Path) -> None:
    weights = {"w": torch.ones(2), "num_batches_tracked": torch.tensor(3)}
    save_checkpoint(tmp_path / "a.pt", {"model": weights, "config": "", "epoch": 0})
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["model"]["num_batches_tracked"], torch.tensor(3))
    assert checkpoint.first_nonfinite(weights) is None


def test_changed_settings_lists_only_optimisation_keys_that_differ() -> None:
    from flexunet.config import config_from_dict, config_to_ini
    from flexunet.train.resume import changed_settings

    saved = config_to_ini(config_from_dict({"model": {"learning_rate": 0.01, "optimizer": "Adam"},
                                            "train": {"epochs": 3, "monitor": "val_loss"}}))
    now = config_from_dict({"model": {"learning_rate": 0.01, "optimizer": "adam"},  # same optimizer, other case
                            "train": {"epochs": 9, "monitor": "val_dice"}})  # epochs may grow on resume
    assert [(c.key, c.old, c.new) for c in changed_settings(saved, now)] == [("monitor", "val_loss", "val_dice")]


def test_resume_with_another_monitor_restarts_early_stopping_and_the_reducer(tmp_path: Path) -> None:
    from flexunet.config import config_from_dict, config_to_ini

    state = make_state(tmp_path)
    state.config = {"config": config_to_ini(config_from_dict({"train": {"monitor": "val_loss"}}))}
    state.early.update(0.3), state.early.update(0.4), state.reducer.update(0.3), state.reducer.update(0.4)
    save_epoch(state, 1)
    for monitor, restarted in (("val_loss", False), ("val_dice", True)):
        fresh = make_state(tmp_path)
        notes = fresh.restore(torch.device("cpu"), config_from_dict({"train": {"monitor": monitor}}))
        assert (fresh.early.best, fresh.early.wait) == ((float("inf"), 0) if restarted else (0.3, 1))
        assert (fresh.reducer.best, fresh.reducer.wait) == ((float("inf"), 0) if restarted else (0.3, 1))
        assert any("start counting afresh" in n for n in notes) is restarted


def test_a_format_1_checkpoint_reads_with_epochs_numbered_from_1(tmp_path: Path) -> None:
    """Before 2026-12, last.pt held the 0-based index of its epoch; resuming it as a count would skip an epoch."""
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "model": {"w": torch.ones(1)}, "config": "", "epoch": 2, "best_epoch": 1}, path)
    state = load_checkpoint(path)
    assert (state["epoch"], state["best_epoch"]) == (3, 2)
    save_checkpoint(tmp_path / "new.pt", {"model": {"w": torch.ones(1)}, "config": "", "epoch": 3, "best_epoch": 2})
    assert load_checkpoint(tmp_path / "new.pt")["epoch"] == 3
