"""End to end on the shared real data (skipped when ../shared is absent).

The pap-smear split leaks (test cells are flips/rotations of training cells): numbers here check that the
pipeline learns, not how well a model generalises.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import requires_shared, run_cli


def link_subset(source: Path, target: Path, count: int) -> Path:
    """Symlink the first `count` pairs of source/{images,masks} into target (the shared data is never copied)."""
    for kind in ("images", "masks"):
        (target / kind).mkdir(parents=True)
    for image in sorted((source / "images").iterdir())[:count]:
        (target / "images" / image.name).symlink_to(image)
        (target / "masks" / image.name).symlink_to(source / "masks" / image.name)
    return target


def data_overrides(root: Path) -> list[str]:
    out = []
    for section, split in (("train", "train"), ("valid", "valid"), ("test", "test")):
        out += ["--set", f"{section}.images_dir={root / split / 'images'}", "--set", f"{section}.masks_dir={root / split / 'masks'}"]
    return out


def output_overrides(tmp_path: Path) -> list[str]:
    pairs = {"train.model_dir": "models", "train.eval_dir": "eval", "train.epoch_change_infer_dir": "previews",
             "infer.output_dir": "out", "infer.merged_dir": "merged"}
    return [arg for key, sub in pairs.items() for arg in ("--set", f"{key}={tmp_path / sub}")]


def make_subset(tmp_path: Path, n_train: int, n_eval: int) -> Path:
    source = requires_shared("pap-smear")
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        link_subset(source / split, tmp_path / "pap" / split, n)
    return tmp_path / "pap"


def test_seed_pap_smear_config_trains_unmodified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's own config (31M-parameter network, 128 px) through train, evaluate and infer, one short epoch."""
    config = requires_shared("configs", "pap-smear.config")
    pap_subset = make_subset(tmp_path, 16, 8)
    args = [str(config), *data_overrides(pap_subset), *output_overrides(tmp_path)]
    infer_dir = ["--set", f"infer.images_dir={pap_subset / 'test' / 'images'}"]
    assert run_cli(monkeypatch, "train", *args, *infer_dir, "--set", "train.epochs=1", "-q") == 0
    assert (tmp_path / "models" / "best.pt").is_file()
    assert (tmp_path / "models" / "pap-smear.config").read_text() == config.read_text()  # copy of the seed config
    assert (tmp_path / "eval" / "train_metrics.csv").read_text().splitlines()[0] == "epoch,iou_coef,val_iou_coef,"
    assert run_cli(monkeypatch, "evaluate", *args, "-q") == 0
    assert (tmp_path / "eval" / "evaluation.csv").read_text().startswith("bce_iou_loss,")
    assert run_cli(monkeypatch, "infer", *args, *infer_dir, "-q") == 0
    masks = sorted((tmp_path / "out").glob("*.png"))
    assert len(masks) == 8 and cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED).shape == (128, 128)


def test_small_flexunet_learns_pap_smear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pap_subset = make_subset(tmp_path, 96, 16)
    config = tmp_path / "small.config"
    config.write_text(
        "[model]\nimage_width = 64\nimage_height = 64\nnum_classes = 1\nbase_filters = 8\nnum_layers = 4\n"
        "dropout_rate = 0.02\nlearning_rate = 0.002\nloss = \"bce_iou_loss\"\nmetrics = [\"iou_coef\"]\n"
        "[train]\nepochs = 6\nbatch_size = 8\nepoch_change_infer = False\n[mask]\nthreshold = 60\n"
    )
    assert run_cli(monkeypatch, "train", str(config), *data_overrides(pap_subset), "-q") == 0
    assert run_cli(monkeypatch, "evaluate", str(config), *data_overrides(pap_subset), "-q") == 0
    per_class = (tmp_path / "eval" / "per_class.csv").read_text().splitlines()
    dice = float(per_class[1].split(",")[1])
    assert dice > 0.6, per_class


def test_multiclass_cervical_mini_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data = requires_shared("mini_test", "cervical-cancer")
    config = tmp_path / "cervical.config"
    config.write_text(
        "[model]\nimage_width = 64\nimage_height = 64\nnum_classes = 4\nbase_filters = 8\nnum_layers = 4\n"
        "learning_rate = 0.002\nloss = \"categorical_crossentropy\"\nmetrics = [\"dice_coef_multiclass\"]\n"
        f"[train]\nepochs = 2\nbatch_size = 4\nvalidation_split = 0.25\nimages_dir = \"{data / 'images'}\"\n"
        f"masks_dir = \"{data / 'masks'}\"\nnum_infer_images = 2\n"
        f"[test]\nimages_dir = \"{data / 'images'}\"\nmasks_dir = \"{data / 'masks'}\"\n"
        f"[infer]\nimages_dir = \"{data / 'images'}\"\noutput_dir = \"./out\"\n"
        "[mask]\nrgb_map = {(0,0,0):0, (0,0,255):1, (0,255,0):2, (0,128,255):3}\n"
    )
    assert run_cli(monkeypatch, "train", str(config)) == 0
    assert "farther than 40 from every [mask] rgb_map colour" in capsys.readouterr().out  # anti-aliased edges reported
    assert run_cli(monkeypatch, "evaluate", str(config), "-q") == 0
    header, *rows = (tmp_path / "eval" / "per_class.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["class_1", "class_2", "class_3"]
    assert run_cli(monkeypatch, "infer", str(config), "-q") == 0
    mask = cv2.cvtColor(cv2.imread(str(sorted((tmp_path / "out").glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
    assert mask.shape == (512, 512, 3)
    colours = {tuple(c) for c in np.unique(mask.reshape(-1, 3), axis=0)}
    assert colours <= {(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 128, 255)}
