"""Settings changed between last.pt and a --resume: the config given now wins, and the user is told.

The optimizer's state dict carries the old learning rate and weight decay; without this, a changed [model]
learning_rate would be ignored while config.resolved.ini and history.csv recorded the new one.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.optim import Optimizer

from flexunet.config.checks import Location
from flexunet.config.load import parse_ini_text, parse_value
from flexunet.config.schema import Config
from flexunet.errors import ConfigError

# Keys that change how training goes on (not the architecture: changing that fails to load the weights).
RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("learning_rate", "optimizer", "weight_decay", "loss", "clipvalue"),
    "train": ("batch_size", "steps_per_epoch", "seed", "patience", "monitor", "learning_rate_reducer",
              "reducer_factor", "reducer_patience", "min_lr", "amp"),
}


@dataclass(frozen=True)
class Change:
    """One setting whose value in last.pt's config differs from the config given now."""

    where: str  # "exp.config [model] learning_rate"
    key: str
    old: object
    new: object


def _normal(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value  # "Adam" and "adam" are one optimizer


def changed_settings(saved_ini: str, cfg: Config) -> list[Change]:
    """The RESUME_KEYS whose value in `saved_ini` (last.pt's resolved config) differs from `cfg`."""
    saved = parse_ini_text(saved_ini, "last.pt")
    changes = []
    for section, keys in RESUME_KEYS.items():
        for key in keys:
            raw = saved.get(section, {}).get(key)
            if raw is None:
                continue
            try:
                old = parse_value(raw, Location("last.pt", section, key))
            except ConfigError:
                continue
            new = getattr(getattr(cfg, section), key)
            if _normal(old) != _normal(new):
                changes.append(Change(getattr(cfg, section).where(key), key, old, new))
    return changes


def describe(change: Change) -> str:
    """One line for the user: the new value, the old one, and which is used."""
    return f"{change.where} = {change.new!r}, last.pt was trained with {change.old!r}: resuming with {change.new!r}"


def apply_to_optimizer(changes: list[Change], optim: Optimizer, fresh_groups: list[dict]) -> None:
    """Put the new config's hyperparameters into `optim`, just loaded from last.pt.

    The learning rate is replaced only when [model] learning_rate changed (otherwise last.pt's, with any plateau
    reductions, goes on); the other settings when [model] optimizer or weight_decay changed. `fresh_groups` are the
    param-group settings the optimizer was built with from the new config.
    """
    keys = {c.key for c in changes}
    for group, fresh in zip(optim.param_groups, fresh_groups, strict=True):
        if keys & {"optimizer", "weight_decay"}:
            group.update({k: v for k, v in fresh.items() if k not in ("lr", "params")})
        if "learning_rate" in keys:
            group["lr"] = fresh["lr"]
