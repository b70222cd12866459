"""Opt-in bf16 training on CPUs with native bf16 ([train] cpu_bf16): chosen only where it is fast, and it learns."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from flexunet.runs import device as device_module
from flexunet.runs.device import amp_dtype, cpu_has_bf16
from tests.conftest import make_config, run_cli

CPU = torch.device("cpu")


def test_cpu_bf16_only_when_asked_and_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert amp_dtype(CPU) is None and amp_dtype(CPU, cpu_bf16=True) is torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    assert amp_dtype(CPU, cpu_bf16=True) is None  # emulated bf16 is ~600x slower: never chosen


def test_cpu_bf16_without_native_support_trains_fp32_with_a_note(tmp_path: Path, tiny_dataset: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1, "cpu_bf16": True, "epoch_change_infer": False}})
    assert run_cli(monkeypatch, "train", str(config)) == 0
    assert "[train] cpu_bf16: this CPU has no native bf16" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (avx512_bf16 / AMX)")
def test_cpu_bf16_training_runs_in_bf16_and_learns(tmp_path: Path, tiny_dataset: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet.models.flexunet import FlexUNet

    dtypes: set[torch.dtype] = set()
    original = FlexUNet.forward

    def spy(self: FlexUNet, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(FlexUNet, "forward", spy)
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 8, "cpu_bf16": True, "epoch_change_infer": False}})
    assert run_cli(monkeypatch, "train", str(config), "-q") == 0
    assert torch.bfloat16 in dtypes
    with open(tmp_path / "eval" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0]
    assert max(float(r["val_dice"]) for r in rows) > 0.5
