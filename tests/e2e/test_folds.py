"""Cross-validation: `train --folds K` by source group, `--fold k` alone, `evaluate --folds` out of fold, and the
fold models as an ensemble."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_config, run_cli, write_disc_pairs

pytestmark = pytest.mark.slow


def _data(tmp_path: Path) -> Path:
    """12 training sources, two of them with a flipped copy under a seed prefix, and 4 validation pairs."""
    data = tmp_path / "data"
    write_disc_pairs(data / "train", 12, seed=0)
    write_disc_pairs(data / "valid", 4, seed=1)
    write_disc_pairs(data / "test", 4, seed=2)
    for folder in ("images", "masks"):
        for i in (0, 1):
            shutil.copy(data / "train" / folder / f"img_{i:03d}.png", data / "train" / folder / f"flipped_img_{i:03d}.png")
        for path in (data / "valid" / folder).iterdir():  # names unique across train and valid
            path.rename(path.with_name(f"v{path.name}"))
    return data


def _folds(model_dir: Path) -> dict[str, tuple[str, int]]:
    with (model_dir / "folds.csv").open() as handle:
        return {r["pair"]: (r["group"], int(r["fold"])) for r in csv.DictReader(handle)}


def test_folds_train_evaluate_out_of_fold_and_ensemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, _data(tmp_path), {"train": {"epochs": 2, "epoch_change_infer": False},
                                                     "postprocess": {"auto": True}})
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "train", str(config), "--folds", "3", "--device", "cpu") == 0
    out = capsys.readouterr().out
    # [postprocess] auto over folds: threshold and cleaning chosen on all 18 out-of-fold predictions
    choice = json.loads((tmp_path / "models" / "postprocess.json").read_text())
    assert choice["split"] == "out-of-fold" and choice["images"] == 18 and choice["checkpoint"].count("best.pt") == 3
    assert choice["threshold"]["dice_after"] >= choice["threshold"]["dice_before"] and len(choice["classes"]) == 1
    assert "[postprocess] auto, out of fold (18 pairs): threshold" in out
    folds = _folds(tmp_path / "models")
    groups = len({g for g, _ in folds.values()})  # 16 by name; synthetic discs may also look like near-copies
    assert groups <= 16 and f"3 folds of 18 [train] + [valid] pairs by {groups} source groups" in out
    assert len(folds) == 18 and {f for _, f in folds.values()} == {0, 1, 2}
    for i in (0, 1):  # a source and its flipped copy are held out together
        assert folds[f"img_{i:03d}"][1] == folds[f"flipped_img_{i:03d}"][1]
    for k in range(3):
        assert (tmp_path / "models" / f"fold_{k}" / "best.pt").is_file()
        assert (tmp_path / "eval" / f"fold_{k}" / "history.csv").is_file()
    assert run_cli(monkeypatch, "evaluate", str(config), "--folds", "-q", "--device", "cpu") == 0
    oof = tmp_path / "eval" / "out_of_fold"
    metrics = json.loads((oof / "metrics.json").read_text())
    assert metrics["section"] == "out-of-fold" and sum(f["images"] for f in metrics["folds"]) == 18
    assert metrics["bootstrap"]["count"] == groups and metrics["bootstrap"]["unit"] == "source groups"
    with (oof / "per_image.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 18
    page = (oof / "report.html").read_text()
    assert '<table id="folds">' in page and page.count('<tr data-fold="') == 3
    glob = str(tmp_path / "models" / "fold_*" / "best.pt")
    assert run_cli(monkeypatch, "evaluate", str(config), "-q", "--ensemble", glob, "--no-report",
                   "--set", "train.eval_dir=./ensemble_eval") == 0
    metrics = json.loads((tmp_path / "ensemble_eval" / "metrics.json").read_text())
    assert metrics["provenance"]["ensemble"]
    assert metrics["postprocess"]["threshold"] == choice["threshold"]["value"]  # the ensemble labels at the choice


def test_one_fold_alone_and_the_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, _data(tmp_path), {"train": {"epochs": 1, "epoch_change_infer": False}})
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "train", str(config), "--folds", "3", "--fold", "1", "--set", "postprocess.auto=True",
                   "--device", "cpu") == 0
    assert (tmp_path / "models" / "fold_1" / "best.pt").is_file()
    assert not (tmp_path / "models" / "fold_0").exists() and len(_folds(tmp_path / "models")) == 18
    # [postprocess] auto waits for every fold: no out-of-fold choice from one fold's predictions
    assert "once every fold is trained (fold 0 is not yet" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "models" / "postprocess.json").exists()
    assert run_cli(monkeypatch, "evaluate", str(config), "--folds", "-q") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fold 0" in err and "--fold 0" in err
    assert run_cli(monkeypatch, "train", str(config), "--folds", "40", "-q", "--set", "train.model_dir=./other") == 2
    err = capsys.readouterr().err
    assert "folds = 40: [train] + [valid] hold only" in err and err.count("\n") == 1
    assert not (tmp_path / "other").exists()
    assert run_cli(monkeypatch, "train", str(config), "--folds", "3", "--fold", "3", "-q") == 2
    assert "numbered 0 to 2" in capsys.readouterr().err
