"""Ensembles: the mean probability of several checkpoints, through evaluate, infer and export; one label space."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexunet.config import load_config
from flexunet.errors import CheckpointError, ConfigError
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.ensemble import Ensemble, ensemble_paths, load_ensemble
from tests.conftest import make_config, run_cli, save_random_checkpoint


def _checkpoint(tmp_path: Path, tiny_dataset: Path, name: str, sections: dict, seed: int = 0) -> Path:
    """models/<name>/best.pt with random weights, from its own config file (make_config writes one file name)."""
    config = make_config(tmp_path, tiny_dataset, sections | {"train": {"model_dir": f"./models/{name}"}})
    return save_random_checkpoint(config.rename(tmp_path / f"{name}.config"), seed=seed)


def _members(tmp_path: Path, tiny_dataset: Path, count: int = 3, sections: dict | None = None) -> tuple[Path, list]:
    """`count` checkpoints of one config under models/fold_<k>/best.pt, each with its own random weights."""
    paths = [_checkpoint(tmp_path, tiny_dataset, f"fold_{k}", sections or {}, seed=k) for k in range(count)]
    return make_config(tmp_path, tiny_dataset, sections), paths


@pytest.mark.parametrize("classes", [1, 3])
def test_the_ensemble_is_the_mean_probability_of_its_members(tmp_path: Path, tiny_dataset: Path,
                                                             classes: int) -> None:
    sections = {"model": {"num_classes": classes}} if classes > 1 else None
    config, paths = _members(tmp_path, tiny_dataset, 3, sections)
    cfg = load_config(config)
    cpu = torch.device("cpu")
    ensemble = load_ensemble(paths, cpu, cfg)
    members = [load_trained_model(p, cpu)[0] for p in paths]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if classes == 1:
            expected = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
            got = torch.sigmoid(ensemble(x))
        else:
            expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
            got = torch.softmax(ensemble(x), 1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, torch.sigmoid(members[0](x)) if classes == 1 else torch.softmax(members[0](x), 1),
                              atol=1e-3)  # the members differ: the mean is not one of them
    single = Ensemble([members[0], members[0]], binary=classes == 1)
    with torch.no_grad():
        assert torch.allclose(single(x).sigmoid() if classes == 1 else single(x).softmax(1),
                              members[0](x).sigmoid() if classes == 1 else members[0](x).softmax(1), atol=1e-5)


def test_members_of_another_label_space_are_refused_naming_the_file(tmp_path: Path, tiny_dataset: Path) -> None:
    other = _checkpoint(tmp_path, tiny_dataset, "three", {"model": {"num_classes": 3}})
    renamed = _checkpoint(tmp_path, tiny_dataset, "renamed", {"mask": {"class_names": ["background", "nucleus"]}})
    config, paths = _members(tmp_path, tiny_dataset, 2)
    with pytest.raises(CheckpointError, match=r"three/best.pt: trained for 3 classes .* the config for binary"):
        load_ensemble([*paths, other], torch.device("cpu"), load_config(config))
    with pytest.raises(CheckpointError, match=r"renamed/best.pt: trained for binary \['background', 'nucleus'\]"):
        load_ensemble([*paths, renamed], torch.device("cpu"), load_config(config))
    with pytest.raises(ConfigError, match="no checkpoint matches"):
        ensemble_paths([str(tmp_path / "nowhere" / "*.pt")])
    with pytest.raises(ConfigError, match="an ensemble needs at least 2"):
        ensemble_paths([str(paths[0])])


def test_evaluate_infer_and_export_take_an_ensemble(tmp_path: Path, tiny_dataset: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config, paths = _members(tmp_path, tiny_dataset, 3)
    monkeypatch.chdir(tmp_path)
    glob = str(tmp_path / "models" / "fold_*" / "best.pt")
    assert run_cli(monkeypatch, "evaluate", str(config), "-q", "--ensemble", glob, "--no-report") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["provenance"]["ensemble"]["ensemble"] == [str(p) for p in paths]
    assert run_cli(monkeypatch, "infer", str(config), "-q", "--ensemble", glob, "--output", "ens") == 0
    assert len(list((tmp_path / "ens").glob("*.png"))) == 4
    pytest.importorskip("onnxruntime")
    from flexunet.predict.onnx import OnnxModel

    assert run_cli(monkeypatch, "export", str(config), "-q", "--ensemble", glob, "--onnx", "ens.onnx") == 0
    ensemble = load_ensemble(paths, torch.device("cpu"), load_config(config))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (torch.sigmoid(ensemble(x)) - torch.sigmoid(OnnxModel(tmp_path / "ens.onnx")(x))).abs().max() < 1e-4
    assert run_cli(monkeypatch, "infer", str(config), "-q", "--ensemble", glob, "--checkpoint", str(paths[0])) == 2
