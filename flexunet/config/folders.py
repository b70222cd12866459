"""Output folders never equal or contain an input folder: masks written into images_dir overwrite the images, and a
training run moving model_dir aside would take the dataset with it. `protected_inputs` lists everything a config
makes a command read, for the output guard (flexunet/files.py) to refuse as a target."""
from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from flexunet.config.schema import Config
from flexunet.config.section import looks_like_file
from flexunet.errors import ConfigError
from flexunet.files import Protected, real_path

INPUT_SECTIONS = ("train", "valid", "test", "infer", "tiledinfer")
INPUT_KEYS = ("images_dir", "masks_dir")

Output = tuple[str, Path]  # (where, e.g. "my.config [infer] output_dir", folder)


def _input_paths(pattern: str) -> list[Path]:
    """The folders or files an input key names: itself, or for a glob its matches and the part before the first
    wildcard (every match lies under it, including folders that do not exist yet)."""
    if not glob.has_magic(pattern):
        return [real_path(pattern)]
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return [real_path(Path(*parts[:fixed]) if fixed else ".")] + [real_path(m) for m in glob.glob(pattern)]


def protected_inputs(cfg: Config, reads: Sequence[tuple[Path | str | None, str]] = ()) -> list[Protected]:
    """What a command run with `cfg` reads, so never writes: the config file, every images/masks folder (or the
    files a glob matches), split files, [model] weights files, and `reads` ((path, why) pairs: the checkpoint or ONNX
    file this command loads)."""
    found = [Protected(Path(cfg.source), "the config file")] if cfg.source else []
    for key, pattern in input_folders(cfg):
        paths = [Path(pattern)] if not glob.has_magic(pattern) else [Path(m) for m in glob.glob(pattern)]
        found += [Protected(path, key) for path in paths]
    for name in INPUT_SECTIONS:
        split_file = getattr(getattr(cfg, name), "split_file", None)
        if split_file:
            found.append(Protected(Path(split_file), f"[{name}] split_file"))
    if cfg.model.pretrained_weights:
        found.append(Protected(Path(cfg.model.pretrained_weights), "[model] pretrained_weights"))
    if cfg.model.encoder_weights and looks_like_file(cfg.model.encoder_weights):
        found.append(Protected(Path(cfg.model.encoder_weights), "[model] encoder_weights"))
    return found + [Protected(Path(path), why) for path, why in reads if path]


def input_folders(cfg: Config) -> list[tuple[str, str]]:
    """("[test] images_dir", pattern) for every images and masks folder the config names."""
    found = []
    for name in INPUT_SECTIONS:
        section = getattr(cfg, name)
        found += [(f"[{name}] {key}", getattr(section, key)) for key in INPUT_KEYS if getattr(section, key, None)]
    return found


def overlap_problems(outputs: Sequence[Output], inputs: Sequence[tuple[str, str]]) -> list[str]:
    """One line per output folder that is, or contains, an input folder or file."""
    problems = []
    for where, folder in outputs:
        out = real_path(folder)
        own_section_first = sorted(inputs, key=lambda item: item[0].split()[0] not in where)
        for key, pattern in own_section_first:
            hit = next((p for p in _input_paths(pattern) if p.is_relative_to(out)), None)
            if hit is None:
                continue
            relation = "is the same folder as" if hit == out else "contains"
            problems.append(f"{where} {folder} {relation} {key} {pattern}: its outputs would overwrite or move the "
                            f"inputs; choose another folder")
            break
    return problems


def check_output_folders(cfg: Config, outputs: Sequence[Output]) -> None:
    """Raise ConfigError, before anything is written, when an output folder is or contains an input of `cfg`."""
    problems = overlap_problems(outputs, input_folders(cfg))
    if problems:
        raise ConfigError(problems)
