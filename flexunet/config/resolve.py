"""Seed-era choices that depend on which keys the user set, made once at load (see `schema.Resolved`).

After this, no stage looks at what the user wrote: each reads the section values and `cfg.resolved`.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Literal

from flexunet.config.schema import Config, Resolved

INFER_SECTIONS = ("infer", "tiledinfer")


def resolve(cfg: Config, set_keys: Collection[str], command_line_keys: tuple[str, ...]) -> Resolved:
    """`set_keys`: every "section.key" the file or --set gave; `command_line_keys`: those from --set, in order."""
    eval_section: Literal["train", "eval"] = (
        "eval" if cfg.eval.eval_dir and "train.eval_dir" not in set_keys else "train"
    )
    return Resolved(
        eval_dir_section=eval_section,
        elastic=_elastic_source(cfg, set_keys),
        merged_dirs=_merged_dirs(cfg, command_line_keys),
        command_line_keys=command_line_keys,
    )


def _elastic_source(cfg: Config, set_keys: Collection[str]) -> Literal["deformation", "deformation_sigmoid",
                                                                        "augmentor"]:
    """F reads [deformation] (its `sigmoids` list wins); S switched it on with [augmentor] transformer and read
    [augmentor] alpah/sigmoid. A `sigmoid` set alone in [deformation] is used rather than the default list."""
    a = cfg.augmentor
    if a.transformer and not a.deformation and not any(k.startswith("deformation.") for k in set_keys):
        return "augmentor"
    if "deformation.sigmoid" in set_keys and "deformation.sigmoids" not in set_keys:
        return "deformation_sigmoid"
    return "deformation"


def _merged_dirs(cfg: Config, command_line_keys: Collection[str]) -> dict[str, str]:
    """Overlays follow the masks: an output_dir from the command line (--output) without a merged_dir there moves
    the config's merged_dir to `<output_dir>_merged`."""
    dirs = {}
    for name in INFER_SECTIONS:
        section = getattr(cfg, name)
        moved = f"{name}.output_dir" in command_line_keys and f"{name}.merged_dir" not in command_line_keys
        if section.merged_dir and moved:
            dirs[name] = f"{Path(section.output_dir)}_merged"
    return dirs
