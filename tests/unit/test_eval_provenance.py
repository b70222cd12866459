"""What an evaluation records about where its numbers come from: the config the checkpoint was trained with (apart
from the evaluation's own), the flexunet version and commit, and which unit the bootstrap resampled."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flexunet.config import load_config
from flexunet.evaluate import evaluate_from_config, provenance
from flexunet.evaluate.groups import image_resampling
from flexunet.evaluate.provenance import ORIGIN_NOT_RECORDED, provenance_record
from flexunet.evaluate.report import provenance_sections
from flexunet.metrics.bootstrap import bootstrap_mean
from flexunet.models import build_model
from flexunet.runs.checkpoint import checkpoint_config, load_checkpoint, read_training_config, save_checkpoint
from flexunet.runs.rundir import run_dir_for
from tests.conftest import make_config

PREFIXES = ("", "flipped_", "mirrored_", "rotated_90_")


def write_copies(folder: Path, sources: int) -> None:
    """Each source disc image with three flipped/rotated copies named as the seed named them."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i in range(sources):
        mask = np.zeros((32, 32), np.uint8)
        cv2.circle(mask, (10 + 3 * i, 16), 5 + i, 255, -1)
        image = np.where(mask[..., None] > 0, 200, 40).repeat(3, 2).astype(np.uint8)
        for prefix, turn in zip(PREFIXES, (lambda a: a, np.fliplr, np.flipud, np.rot90)):
            cv2.imwrite(str(folder / "images" / f"{prefix}cell{i}.png"), np.ascontiguousarray(turn(image)))
            cv2.imwrite(str(folder / "masks" / f"{prefix}cell{i}.png"), np.ascontiguousarray(turn(mask)))


@pytest.fixture
def trained_run(tmp_path: Path) -> Path:
    """A config and a best.pt saved as training saves it, trained (in its stored config) with epochs = 2 from --set;
    its test split is 5 sources x 4 copies. The weights predict foreground everywhere, so each image's Dice depends
    on its disc's size only: the same for the 4 copies of a source, different between sources."""
    from tests.conftest import write_disc_pairs

    for split, n in (("train", 4), ("valid", 2)):
        write_disc_pairs(tmp_path / "data" / split, n)
    write_copies(tmp_path / "data" / "test", 5)
    config = make_config(tmp_path, tmp_path / "data")
    trained = load_config(config, ["train.epochs=2"])
    weights = {k: torch.zeros_like(v) for k, v in build_model(trained.model).state_dict().items()}
    weights[[k for k in weights if k.endswith("bias")][-1]] += 5.0  # the output layer's bias: foreground everywhere
    save_checkpoint(run_dir_for(trained).best, {"model": weights, **checkpoint_config(trained), "epoch": 1})
    return config


def test_checkpoint_stores_origins_as_plain_strings(trained_run: Path) -> None:
    state = load_checkpoint(run_dir_for(load_config(trained_run)).best)  # torch.load(weights_only=True)
    assert state["config_origins"]["train.epochs"] == "command line"
    assert state["config_origins"]["model.base_filters"] == "file"
    training = read_training_config(state, "best.pt")
    assert training.origins_recorded and training.cfg.train.epochs == 2
    assert training.cfg.origins["train.epochs"] == "command line"


def test_an_older_checkpoint_without_origins_shows_its_values_not_their_origin(trained_run: Path) -> None:
    state = load_checkpoint(run_dir_for(load_config(trained_run)).best)
    del state["config_origins"]
    training = read_training_config(state, "old.pt")
    assert training.cfg.train.epochs == 2 and not training.origins_recorded
    record = provenance_record(training, load_config(trained_run))
    assert record["training_config"]["train"]["epochs"] == {"value": 2, "from": ORIGIN_NOT_RECORDED}


def test_report_and_metrics_json_show_the_training_config_apart_from_the_evaluation(trained_run: Path) -> None:
    cfg = load_config(trained_run, ["train.epochs=7"])
    result = evaluate_from_config(cfg, device="cpu", quiet=True, examples=1)
    eval_dir = run_dir_for(cfg).eval_dir
    page = (eval_dir / "report.html").read_text()
    training = page[page.index('<div id="training-config">'):page.index('<div id="evaluation-config">')]
    epochs_row = re.search(r"<td class=\"name\">epochs</td><td class=\"name\"><code>(\d+)</code></td>"
                           r"<td class=\"name [a-z-]+\">([a-z ]+)</td>", training)
    assert epochs_row.groups() == ("2", "command line")  # what the weights were trained with, not the 7 given now
    differences = page[page.index('id="config-differences"'):]
    assert re.search(r'data-key="train.epochs">.*?<code>2</code>.*?<code>7</code>.*?command line', differences)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    record = metrics["provenance"]
    assert record["training_config"]["train"]["epochs"] == {"value": 2, "from": "command line"}
    assert record["evaluation_config"]["train"]["epochs"] == {"value": 7, "from": "command line"}
    assert record["training_config"]["model"]["base_filters"] == {"value": 8, "from": "file"}
    assert record["flexunet_version"] == provenance.flexunet_version()
    assert "git_commit" not in record or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_commit"])
    assert result.files[-1].name == "report.html"


def test_metrics_json_and_report_name_the_resampled_unit_and_count(trained_run: Path) -> None:
    cfg = load_config(trained_run)
    evaluate_from_config(cfg, device="cpu", quiet=True, examples=1)
    eval_dir = run_dir_for(cfg).eval_dir
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["images"] == 20
    assert (metrics["bootstrap"]["unit"], metrics["bootstrap"]["count"]) == ("source groups", 5)
    assert "5 source groups" in metrics["notes"]["ci"]
    assert 'data-unit="source groups" data-count="5"' in (eval_dir / "report.html").read_text()
    # the interval written is the grouped one: recompute it from per_image.csv (same resamples and seed)
    rows = [line.split(",") for line in (eval_dir / "per_image.csv").read_text().splitlines()]
    column = rows[0].index("dice_class_1")
    values = torch.tensor([[float(r[column])] for r in rows[1:]], dtype=torch.float64)
    groups = image_resampling([Path(r[0]).stem for r in rows[1:]]).groups
    entry = metrics["per_class"]["class_1"]
    grouped, images = bootstrap_mean(values, groups=groups), bootstrap_mean(values)
    assert entry["dice_image_mean_ci_low"] == pytest.approx(grouped.low.item(), abs=1e-3)
    assert entry["dice_image_mean_ci_high"] == pytest.approx(grouped.high.item(), abs=1e-3)
    assert grouped.high.item() - grouped.low.item() > 1.5 * (images.high.item() - images.low.item())


def test_git_commit_only_of_flexunet_s_own_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import subprocess

    outside = tmp_path / "site-packages" / "flexunet" / "evaluate"
    outside.mkdir(parents=True)
    monkeypatch.setattr(provenance, "__file__", str(outside / "provenance.py"))
    assert provenance.git_commit() is None  # not in a git checkout at all
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=tmp_path, check=True)
    assert provenance.git_commit() is None  # inside someone else's repository: its commit is not flexunet's


def test_git_commit_is_left_out_when_unknown(monkeypatch: pytest.MonkeyPatch, trained_run: Path) -> None:
    monkeypatch.setattr(provenance, "git_commit", lambda: None)
    record = provenance_record(None, load_config(trained_run))
    assert "git_commit" not in record and record["training_config"] is None and "flexunet_version" in record


def test_a_model_from_code_says_no_training_config(trained_run: Path) -> None:
    from flexunet.evaluate.leakage import LeakSummary
    from flexunet.evaluate.report import ReportData
    from flexunet.evaluate.settings import EvalSettings

    cfg = load_config(trained_run)
    data = ReportData(cfg=cfg, settings=EvalSettings.from_config(cfg), section="test", checkpoint="", images=0, loss_name="loss", loss=0.0, per_class={},
                      per_image_dice=np.zeros((0, 1)), seed_metrics={}, confusion=None, worst=[], best=[],
                      leaks=LeakSummary("not checked", (), ""), history=[], curve_pngs=(), files=(), resamples=10,
                      seed=0)
    assert "Not available: the model was passed in code" in provenance_sections(data)
