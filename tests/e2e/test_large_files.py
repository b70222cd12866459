"""A decompression bomb in the data stops nothing: train, evaluate, infer (plain and tiled) and doctor report it and
go on with the other files."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config, run_cli
from tests.unit.test_large_images import write_png_bomb


@pytest.mark.slow
def test_every_verb_reports_and_skips_a_bomb(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("images", "masks"):
        for split in ("train", "test"):
            write_png_bomb(tiny_dataset / split / folder / "bomb.png", 100_000, 100_000)
        write_png_bomb(tiny_dataset / "test" / folder / "big.png", 30_000, 30_000)  # over the tiled limit too
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 1, "epoch_change_infer": False},
                                                 "tiledinfer": {"overlapping": 8, "output_dir": "./tiled"}})
    assert run_cli(monkeypatch, "train", str(config), "--quiet", "--device", "cpu") == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: [train] skipped 1 pairs over 64,000,000 pixels ([image] max_pixels): "
                        "bomb.png (100000x100000)"]
    assert run_cli(monkeypatch, "evaluate", str(config), "--quiet") == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: [test] skipped 2 pairs")
    for tiled in ([], ["--tiled", "--images", str(tiny_dataset / "test" / "images")]):
        assert run_cli(monkeypatch, "infer", str(config), "--quiet", *tiled) == 0
        out = capsys.readouterr().out
        assert "bomb.png: 100000x100000 pixels is over the limit" in out and "big.png: 30000x30000" in out
        assert "wrote 4 masks" in out
    assert run_cli(monkeypatch, "doctor", str(tiny_dataset), "--json", str(tmp_path / "doctor.json")) == 0
    assert "bomb.png: 100000x100000 pixels is over the limit" in capsys.readouterr().out
