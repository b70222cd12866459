"""[train] tensorboard = True logs every history column, the learning rate and the preview masks; off by default."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flexunet.config import load_config
from flexunet.errors import ConfigError
from flexunet.train import train_from_config
from flexunet.train.tensorboard import open_board
from tests.conftest import make_config


def test_tensorboard_logs_history_lr_and_previews(tmp_path: Path, tiny_dataset: Path) -> None:
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(make_config(tmp_path, tiny_dataset, {"train": {"epochs": 2, "tensorboard": True}}))
    result = train_from_config(cfg, device="cpu", quiet=True)
    events = EventAccumulator(str(tmp_path / "eval" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert set(result.history[-1]) - {"epoch"} <= scalars and "lr" in scalars  # every history column
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([r["loss"] for r in result.history], rel=1e-6)
    previews = [t for t in events.Tags()["images"] if t.startswith("preview/")]
    assert len(previews) == 2 and [e.step for e in events.Images(previews[0])] == [1, 2]


def test_tensorboard_is_off_by_default(tmp_path: Path, tiny_dataset: Path) -> None:
    cfg = load_config(make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1}}))
    train_from_config(cfg, device="cpu", quiet=True)
    assert not (tmp_path / "eval" / "tensorboard").exists()


def test_tensorboard_without_the_package_is_a_one_line_config_error(tmp_path: Path, tiny_dataset: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if it were not installed
    cfg = load_config(make_config(tmp_path, tiny_dataset, {"train": {"tensorboard": True}}))
    with pytest.raises(ConfigError) as info:
        open_board(cfg.train, tmp_path / "eval")
    assert str(info.value).startswith("test.config [train] tensorboard = True: the tensorboard package is not installed")
