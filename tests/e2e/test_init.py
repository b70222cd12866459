"""`flexunet init`: a folder in, a config out that trains unmodified, one line per decision; bad input gets one line,
exit 2 and no file. Runs on the demo dataset and on each layout of the shared data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.demo import make_demo_dataset
from flexunet.train import train_from_config
from tests.conftest import requires_shared, run_cli, write_disc_pairs

pytestmark = pytest.mark.slow
ONE_STEP = ["train.epochs=1", "train.steps_per_epoch=1", "train.validation_steps=1"]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def init_and_train(tmp_path: Path, data: Path, name: str, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[Path, str]:
    """Run init (from tmp_path), check what it printed and wrote, and train the config for one step."""
    monkeypatch.chdir(tmp_path)
    before = files_under(data)
    assert run_cli(monkeypatch, "init", str(data), "--out", f"{name}.config", *extra) == 0
    out = capsys.readouterr().out
    assert files_under(data) == before  # nothing written in the data folder
    config = tmp_path / f"{name}.config"
    assert f"wrote {name}.config" in out and config.is_file()
    cfg = load_config(config, ONE_STEP)
    fit = train_from_config(cfg, device="cpu", quiet=True)
    assert fit.epochs_run == 1 and (tmp_path / "runs" / name / "models" / "best.pt").is_file()
    top = data.relative_to(tmp_path).parts[0] if data.is_relative_to(tmp_path) else None
    allowed = {"runs", f"{name}.config", f"{name}.split.csv", ".flexunet-files", top}
    assert {p.name for p in tmp_path.iterdir()} <= allowed, \
        "every folder a run writes is under runs/<name>/: a second config in this folder must not meet the first's"
    return config, out


def test_init_on_the_demo_data_plans_for_the_budget_and_the_config_trains(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = make_demo_dataset(tmp_path / "demo", size=64, counts=(24, 8, 8))
    config, out = init_and_train(tmp_path, data, "demo", monkeypatch, capsys, "--budget", "2m", "--device", "cpu")
    assert "masks are an RGB palette with 3 colours -> num_classes 3" in out
    assert "split: the train/valid/test folders, kept" in out
    assert "training images/s here" in out and "predicted: ~" in out
    text = config.read_text()
    assert 'time_budget = "2m00s"' in text and "num_classes = 3" in text and "rgb_map = {(0, 0, 0): 0" in text
    assert not (tmp_path / "demo.split.csv").exists()  # the given split is clean: no split file
    assert load_config(config).train.time_budget_s == 120


def test_init_writes_a_grouped_split_where_the_given_one_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = requires_shared("pap-smear")
    config, out = init_and_train(tmp_path, data, "pap", monkeypatch, capsys)
    assert "the given train/valid/test folders share 187 sources" in out
    assert "197 sources" in out and "masks are grey" in out and "input size 128x128" in out
    rows = (tmp_path / "pap.split.csv").read_text().splitlines()[1:]
    split_of_group: dict[str, set[str]] = {}
    for row in rows:
        _, group, split = row.split(",")
        split_of_group.setdefault(group, set()).add(split)
    assert len(rows) == 2561 and all(len(s) == 1 for s in split_of_group.values())
    assert 'split_file = "./pap.split.csv"' in config.read_text()


@pytest.mark.parametrize("folder, expect", [
    ("mini_test/cervical-cancer", "RGB palette with 4 colours -> num_classes 4"),
    ("mini_test/breast-cancer-cell", "RGB palette with 3 colours -> num_classes 3"),
    ("isic-large", "mask_suffix '_segmentation'"),
])
def test_init_reads_each_shared_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], folder: str, expect: str) -> None:
    _, out = init_and_train(tmp_path, requires_shared(*folder.split("/")), "run", monkeypatch, capsys)
    assert expect in out


def test_instance_masks_become_a_binary_config_that_keeps_every_object(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    folder = tmp_path / "nuclei"
    write_disc_pairs(folder, 12, size=64)
    for mask_path in (folder / "masks").iterdir():  # 16-bit ids: one object per id, ids from 1 up
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        ids = np.zeros(mask.shape, np.uint16)
        ids[mask > 0] = 1
        ids[:4, :4] = 2
        ids[-4:, -4:] = 300
        cv2.imwrite(str(mask_path), ids)
    config, out = init_and_train(tmp_path, folder, "nuclei", monkeypatch, capsys)
    assert "instance labels" in out and 'kind = "instances"' in config.read_text()


def _only_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "no images/ folder"),
    (lambda d: write_disc_pairs(d, 3) and [p.unlink() for p in (d / "masks").iterdir()], "but no masks"),
    (lambda d: (write_disc_pairs(d, 3), write_disc_pairs(d / "x", 1)) and (d / "images" / "extra.png").write_bytes(
        (d / "images" / "img_000.png").read_bytes()), "extra.png: no mask for this image"),
])
def test_bad_folders_get_one_line_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], make, message: str) -> None:
    data = tmp_path / "data"
    make(data)
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert run_cli(monkeypatch, "init", str(data), "--out", "my.config") == 2
    assert message in _only_error(capsys)
    assert files_under(tmp_path) == before


def test_photos_mixed_sizes_short_budgets_and_existing_files_are_refused(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    photos = write_disc_pairs(tmp_path / "photos", 3, size=64)
    for mask in (photos / "masks").iterdir():
        cv2.imwrite(str(mask), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mixed = write_disc_pairs(tmp_path / "mixed", 3, size=32)
    write_disc_pairs(tmp_path / "big", 1, size=300)
    for kind in ("images", "masks"):
        (tmp_path / "big" / kind / "img_000.png").rename(mixed / kind / "big.png")
    good = write_disc_pairs(tmp_path / "good", 12, size=32)
    (tmp_path / "mine.config").write_text("; the user's own config\n")
    (tmp_path / "other.split.csv").write_text("the user's own file\n")
    before = files_under(tmp_path)
    for args, message in [
        (["init", str(photos)], "these look like photos, not masks"),
        (["init", str(mixed)], "more than 8x apart"),
        (["init", str(good), "--budget", "3s", "--device", "cpu"], "too short to train here"),
        (["init", str(good), "--budget", "soon"], "is not a duration"),
        (["init", str(good), "--out", "mine.config"], "mine.config: already exists"),
        (["init", str(good), "--out", "other.config"], "other.split.csv"),  # a split file of the user's
        (["init", str(good), "--out", "model.pt"], "name the config file"),
    ]:
        if "--out" not in args:
            args += ["--out", "new.config"]
        assert run_cli(monkeypatch, *args) == 2, args
        assert message in _only_error(capsys), args
        assert files_under(tmp_path) == before, args
