"""`flexunet demo` as a user runs it: synthetic data -> train -> evaluate -> infer, and a real foreground Dice."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli


def test_demo_reaches_foreground_dice_above_0_8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert run_cli(monkeypatch, "demo", "--out", str(tmp_path / "demo"), "--quiet") == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "foreground Dice" in line)
    dice = float(line.split("foreground Dice")[1].split(";")[0])
    assert dice > 0.8, out
    root = tmp_path / "demo"
    assert (root / "models" / "best.pt").is_file() and (root / "eval" / "report.html").is_file()
    masks = sorted((root / "test_output").glob("*.png"))
    assert len(masks) == 24 and len(list((root / "test_output_merged").glob("*.png"))) == 24
    colours = {tuple(c) for c in np.unique(cv2.imread(str(masks[0])).reshape(-1, 3), axis=0)}
    assert colours <= {(0, 0, 0), (0, 255, 0), (0, 0, 255)}  # BGR of the demo's rgb_map colours
