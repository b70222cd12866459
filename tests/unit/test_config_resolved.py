"""Seed-era choices that depend on what the user set are made at load (cfg.resolved); later stages read values."""
from __future__ import annotations

from pathlib import Path

from flexunet.augment import Augmenter
from flexunet.augment.ops import Elastic
from flexunet.config import config_from_dict, load_config
from flexunet.config.augmentation import AugmentorSection, DeformationSection
from flexunet.config.schema import Config
from flexunet.evaluate.leakage import doctor_command
from flexunet.infer import infer_folders
from flexunet.runs.rundir import run_dir_for


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.config"
    path.write_text(text)
    return path


def test_eval_eval_dir_is_the_run_folder_only_when_train_has_none(tmp_path: Path) -> None:
    only_eval = load_config(write(tmp_path, '[eval]\neval_dir = "./seed_eval"\n'))
    assert only_eval.resolved.eval_dir_section == "eval"
    assert run_dir_for(only_eval).eval_dir == tmp_path / "seed_eval"
    both = load_config(write(tmp_path, '[eval]\neval_dir = "./seed_eval"\n'), ["train.eval_dir=./logs"])
    assert both.resolved.eval_dir_section == "train" and run_dir_for(both).eval_dir == Path.cwd() / "logs"


def test_elastic_settings_come_from_the_section_chosen_at_load() -> None:
    seed_s = config_from_dict({"augmentor": {"transformer": True, "alpah": 500, "sigmoid": 5}})
    assert seed_s.resolved.elastic == "augmentor"
    alone = config_from_dict({"augmentor": {"deformation": True}, "deformation": {"alpha": 700, "sigmoid": 3}})
    assert alone.resolved.elastic == "deformation_sigmoid"
    assert Augmenter.from_config(alone).op(Elastic).sigmas == (3.0,)  # type: ignore[union-attr]
    both = config_from_dict({"augmentor": {"deformation": True}, "deformation": {"sigmoid": 3, "sigmoids": [6, 7]}})
    assert both.resolved.elastic == "deformation" and Augmenter.from_config(both).op(Elastic).sigmas == (6.0, 7.0)  # type: ignore[union-attr]


def test_a_config_built_in_code_reads_its_sections_plainly() -> None:
    cfg = Config(augmentor=AugmentorSection(deformation=True),
                 deformation=DeformationSection(alpha=10, sigmoid=2, sigmoids=[4]))
    elastic = Augmenter.from_config(cfg).op(Elastic)
    assert elastic is not None and (elastic.alpha, elastic.sigmas) == (10, (4.0,))


def test_overlays_follow_an_output_dir_from_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[infer]\nimages_dir = "./in"\noutput_dir = "./out"\nmerged_dir = "./merged"\n')
    assert infer_folders(load_config(path), tiled=False)[2] == tmp_path / "merged"
    moved = load_config(path, [f"infer.output_dir={tmp_path / 'b'}"])
    assert moved.resolved.merged_dirs == {"infer": f"{tmp_path / 'b'}_merged"}
    assert infer_folders(moved, tiled=False)[2] == Path(f"{tmp_path / 'b'}_merged")
    both = load_config(path, [f"infer.output_dir={tmp_path / 'b'}", f"infer.merged_dir={tmp_path / 'm'}"])
    assert infer_folders(both, tiled=False)[2] == tmp_path / "m"


def test_doctor_command_repeats_the_data_options_given_with_set(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[test]\nimages_dir = "./t"\n'),
                      [f"test.images_dir={tmp_path / 'x'}", "model.learning_rate=0.001", "model.num_classes=2"])
    assert cfg.resolved.command_line_keys == ("test.images_dir", "model.learning_rate", "model.num_classes")
    command = doctor_command(cfg, tmp_path)
    assert f"--set test.images_dir={tmp_path / 'x'}" in command and "--set model.num_classes=2" in command
    assert "learning_rate" not in command
