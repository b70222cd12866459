"""The training seam: `train_from_config(on_epoch_end=...)` sees each epoch's history.csv row and can stop training
cleanly after any epoch, as early stopping does."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from flexunet.config import load_config
from flexunet.runs.checkpoint import load_checkpoint
from flexunet.train import FitResult, train_from_config
from tests.conftest import make_config, write_disc_pairs


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[FitResult, list[dict[str, float]], Path, Path]:
    """5 epochs asked of a tiny 32 px run, stopped by on_epoch_end after epoch 2; returns the rows it saw."""
    root = tmp_path_factory.mktemp("seam")
    for split, n, seed in (("train", 8, 0), ("valid", 4, 1), ("test", 4, 2)):
        write_disc_pairs(root / "data" / split, n, seed=seed)
    cfg = load_config(make_config(root, root / "data", {"train": {"epochs": 5, "epoch_change_infer": False}}))
    seen: list[dict[str, float]] = []

    def after_epoch(row: dict[str, float]) -> bool:
        seen.append(row)
        return row["epoch"] >= 2

    result = train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=after_epoch)
    return result, seen, Path(cfg.train.model_dir), Path(cfg.train.eval_dir)


def test_on_epoch_end_stops_after_epoch_2_of_5_with_readable_checkpoints(stopped: tuple) -> None:
    result, seen, model_dir, eval_dir = stopped
    assert result.epochs_run == 2 and len(result.history) == 2 and len(seen) == 2
    assert result.stopped_by == "on_epoch_end" and not result.stopped_early
    with (eval_dir / "history.csv").open() as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2]
    assert int(load_checkpoint(model_dir / "last.pt")["epoch"]) == 2
    assert 1 <= int(load_checkpoint(model_dir / "best.pt")["epoch"]) <= 2


def test_on_epoch_end_sees_the_rows_of_history_csv(stopped: tuple) -> None:
    _, seen, _, eval_dir = stopped
    with (eval_dir / "history.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert [list(r) for r in written] == [list(r) for r in seen]
    assert written == [{k: f"{v:.6g}" for k, v in r.items()} for r in seen]
