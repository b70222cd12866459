"""Where an evaluation's numbers come from: the config the checkpoint was trained with (and where each of its values
came from), apart from the evaluation's own settings, plus the flexunet version and git commit that scored it.

The evaluation's config says `epochs 100 — from file` even when the checkpoint was trained for 3 epochs with --set;
only the checkpoint knows what produced the weights.
"""
from __future__ import annotations

import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from flexunet.config.schema import SECTIONS, Config
from flexunet.runs.checkpoint import TrainingConfig

ORIGIN_NOT_RECORDED = "not recorded"  # a checkpoint written before origins were stored



def flexunet_version() -> str | None:
    """The installed flexunet version; None when it is not installed (run from a source folder)."""
    try:
        return version("flexunet")
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the git checkout this package is imported from, `-dirty` when tracked files differ from it; None when
    it is not in one (e.g. a wheel install) or git is missing."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10)

    try:
        out = git("rev-parse", "--show-toplevel", "HEAD")
        # a site-packages inside someone's project repo would report that repo's commit: accept only our own checkout
        found = out.stdout.split()
        if out.returncode != 0 or len(found) != 2 or Path(found[0]).resolve() != package.parent:
            return None
        dirty = git("diff", "--quiet", "HEAD").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return None
    return found[1] + ("-dirty" if dirty else "")



def origin_of(cfg: Config, key: str, origins_recorded: bool = True) -> str:
    """"file", "command line", "default", or "not recorded" for an older checkpoint."""
    return cfg.origins.get(key, "default") if origins_recorded else ORIGIN_NOT_RECORDED


def config_record(cfg: Config, origins_recorded: bool = True) -> dict[str, dict[str, dict[str, object]]]:
    """{section: {key: {"value": ..., "from": origin}}} for metrics.json; values JSON cannot hold are kept as repr."""
    return {name: {key: {"value": _plain(value), "from": origin_of(cfg, f"{name}.{key}", origins_recorded)}
                   for key, value in getattr(cfg, name).model_dump().items()}
            for name in SECTIONS}


def provenance_record(training: TrainingConfig | None, evaluation: Config) -> dict[str, object]:
    """metrics.json's "provenance": flexunet version, git commit (when in a checkout), the training config from the
    checkpoint (null when the model was passed in code) and the evaluation's config, each value with its origin."""
    record: dict[str, object] = {"flexunet_version": flexunet_version()}
    commit = git_commit()
    if commit:
        record["git_commit"] = commit
    if training is not None and training.cfg is None:
        record["training_config_problem"] = training.problem
    record["training_config"] = (config_record(training.cfg, training.origins_recorded)
                                 if training is not None and training.cfg is not None else None)
    record["evaluation_config"] = config_record(evaluation)
    return record


def _plain(value: object) -> object:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)
