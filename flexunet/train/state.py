"""What a resumed run needs (weights, optimiser, early stopping, plateau reducer, random states, clock) and the
only writer of best.pt, last.pt and interrupted.pt."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from flexunet.config.schema import Config
from flexunet.console import note
from flexunet.runs.checkpoint import (
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from flexunet.runs.rundir import RunDir
from flexunet.train.budget import RunClock
from flexunet.train.distributed import (
    DistContext,
)
from flexunet.train.resume import apply_to_optimizer, changed_settings, describe
from flexunet.train.schedule import EarlyStopping, PlateauReducer


def _rng_state() -> dict:
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy MT19937 state (a dict only with legacy=False)
    return {"torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate((state["python_version"], tuple(state["python"]), None))


@dataclass
class TrainState:
    """Everything a resumed run needs, and the only writer of best.pt, last.pt and interrupted.pt.

    Checkpoints store epochs numbered from 1: "epoch" in last.pt is the number of finished epochs, so it is also the
    0-based index of the epoch a resumed run starts with.
    """

    model: nn.Module
    optim: Optimizer
    early: EarlyStopping
    reducer: PlateauReducer
    run: RunDir
    config: dict[str, Any]  # checkpoint_config(cfg): the resolved config and its origins
    start_epoch: int = 0  # 0-based index of the first epoch this process runs
    best_epoch: int = 0  # numbered from 1; 0 until an epoch improves
    clock: RunClock = field(default_factory=RunClock)  # the whole run's training time, resumed parts included

    def restore(self, device: torch.device, cfg: Config) -> list[str]:
        """Load last.pt; settings changed since it was written take the new value. Returns one note per change."""
        state = load_checkpoint(self.run.last, device)
        load_weights(self.model, state, self.run.last)
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optim.param_groups]
        self.optim.load_state_dict(state["optimizer"])
        changes = changed_settings(str(state["config"]), cfg)
        apply_to_optimizer(changes, self.optim, fresh_groups)
        notes = [describe(c) for c in changes]
        if any(c.key == "monitor" for c in changes):  # a best value of another monitor means nothing
            notes.append("early stopping and the plateau reducer start counting afresh for the new monitor")
        else:
            self.early.load_state_dict(state["early_stopping"])
            self.reducer.load_state_dict(state["reducer"])
        _set_rng_state(state["rng"])
        self.start_epoch, self.best_epoch = int(state["epoch"]), int(state["best_epoch"])
        self.clock.restart(float(state.get("spent_s", 0.0)))
        return notes

    def weights(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        weights = self.weights()
        if improved:
            self.best_epoch = epoch
            save_checkpoint(self.run.best, {"model": weights, **self.config, "epoch": epoch, "metrics": row})
        save_checkpoint(self.run.last, {
            "model": weights, **self.config, "epoch": epoch, "best_epoch": self.best_epoch, "metrics": row,
            "optimizer": self.optim.state_dict(), "early_stopping": self.early.state_dict(),
            "reducer": self.reducer.state_dict(), "rng": _rng_state(), "spent_s": self.clock.elapsed(),
        })

    def save_interrupted(self, epoch: int) -> Path:
        """Weights at the moment of Ctrl-C/SIGTERM, in epoch number `epoch` (from 1); last.pt keeps the last finished
        epoch for an exact resume."""
        path = self.run.model_dir / "interrupted.pt"
        save_checkpoint(path, {"model": self.weights(), **self.config, "epoch": epoch})
        return path


def resume_state(state: TrainState, cfg: Config, device: torch.device, dist_ctx: DistContext,
                 log: Callable[[str], None]) -> None:
    """Continue from last.pt: one note per setting changed since it was written (even under --quiet)."""
    for text in state.restore(device, cfg):
        if dist_ctx.is_main:  # even under --quiet: these settings change what the resumed run does
            note(text)
    log(f"resuming at epoch {state.start_epoch + 1} from {state.run.last}")
