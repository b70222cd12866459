"""[model] keys per architecture, seed-era choices resolved inside config/, and typed --set values."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flexunet.config import config_to_ini, load_config
from flexunet.config.schema import ModelSection
from flexunet.models import COMMON_MODEL_KEYS, MODEL_KEYS, MODELS
from tests.conftest import requires_shared

PACKAGE = Path(__file__).resolve().parents[2] / "flexunet"
# Modules whose job is to say where a value came from, or that make the seed-era choices once.
MAY_READ_ORIGINS = ("config/", "evaluate/provenance.py", "evaluate/report.py", "runs/checkpoint.py")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.config"
    path.write_text(text)
    return path


def unread_notes(notes: tuple[str, ...]) -> list[str]:
    return [n for n in notes if "does not read it" in n]


def test_a_key_the_model_ignores_gets_one_note(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[model]\nmodel = "flexunet"\nbatch_norm = True\n'))
    assert unread_notes(cfg.notes) == [
        "exp.config [model] batch_norm: set, but model 'flexunet' does not read it; it reads normalization"
    ]


def test_a_key_set_on_the_command_line_is_noted_too(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[model]\nmodel = "TensorFlowFlexUNet"\n'), ["model.embed_dim=96"])
    assert unread_notes(cfg.notes) == ["exp.config [model] embed_dim: set, but model 'flexunet' does not read it"]


def test_keys_the_model_reads_get_no_note(tmp_path: Path) -> None:
    text = ('[model]\nmodel = "flexunet"\nnormalization = True\nbase_kernels = (5, 5)\nnum_layers = 4\n'
            'learning_rate = 0.001\nloss = "bce_iou_loss"\n[train]\nepochs = 1\n')
    assert unread_notes(load_config(write(tmp_path, text)).notes) == []
    text = '[model]\nmodel = "trans_unet"\nbatch_norm = True\nfilter_num = [8, 16, 32, 64]\n'
    assert unread_notes(load_config(write(tmp_path, text)).notes) == []


def test_the_resolved_config_loads_back_without_a_note_per_unread_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[model]\nmodel = "flexunet"\nnum_layers = 4\nbatch_norm = True\n'))
    resolved = tmp_path / "config.resolved.ini"
    resolved.write_text(config_to_ini(cfg))
    assert unread_notes(load_config(resolved).notes) == [
        "config.resolved.ini [model] batch_norm: set, but model 'flexunet' does not read it; it reads normalization"
    ]


def test_seed_batchnorm_spelling_maps_to_batch_norm(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[model]\nmodel = "trans_unet"\nbatchnorm = True\n'))
    assert cfg.model.batch_norm is True and unread_notes(cfg.notes) == []


def test_every_registered_model_declares_real_schema_keys() -> None:
    fields = set(ModelSection.model_fields)
    assert COMMON_MODEL_KEYS <= fields
    assert set(MODEL_KEYS) == set(MODELS)
    for name, keys in MODEL_KEYS.items():
        assert keys, name
        assert keys <= fields, f"{name}: {sorted(keys - fields)} are not [model] keys"
    read = COMMON_MODEL_KEYS.union(*MODEL_KEYS.values())
    assert read == fields, f"keys no model reads: {sorted(fields - read)}"


class SpySection(ModelSection):
    """A [model] section that records every key a builder reads."""

    def __getattribute__(self, key: str) -> object:
        if key in ModelSection.model_fields:
            READ.add(key)
        return super().__getattribute__(key)


READ: set[str] = set()
SMALL = {"image_width": 64, "image_height": 64, "num_layers": 4, "base_filters": 8, "filter_num_begin": 12,
         "embed_dim": 48, "num_heads": 4, "num_transformer": 1}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_builder_reads_exactly_the_keys_it_declares(name: str) -> None:
    section = SpySection(**{k: v for k, v in SMALL.items() if k in COMMON_MODEL_KEYS | MODEL_KEYS[name]})
    READ.clear()
    MODELS[name](section)
    assert READ - COMMON_MODEL_KEYS == MODEL_KEYS[name]


@pytest.mark.parametrize("name", ["pap-smear.config", "mammogram-mastery.config"])
def test_seed_configs_load_without_unread_key_notes(name: str) -> None:
    assert unread_notes(load_config(requires_shared("configs", name)).notes) == []


def test_only_config_and_provenance_read_origins() -> None:
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith(MAY_READ_ORIGINS) and re.search(r"\.origins\b", path.read_text()):
            readers.append(relative)
    assert readers == []


def test_a_number_set_on_the_command_line_for_a_path_is_a_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, "[train]\nepochs = 1\n"), ["infer.output_dir=2024", "mask.mask_suffix=12"])
    assert cfg.infer.output_dir == str(tmp_path / "2024") and cfg.mask.mask_suffix == "12"
    cfg = load_config(write(tmp_path, "[train]\nepochs = 1\n"), ["train.epochs=3", "model.learning_rate=1e-3"])
    assert cfg.train.epochs == 3 and cfg.model.learning_rate == 0.001
