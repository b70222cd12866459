"""Early stopping and learning-rate reduction on a plateau: small objects with `update(value) -> bool`.

Both follow Keras' semantics (the seed used Keras callbacks): lower is better, an epoch improves when the value
drops below the best so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without improvement; patience <= 0 never stops."""

    patience: int
    best: float = float("inf")
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when training should stop."""
        if value < self.best:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.patience > 0 and self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


@dataclass
class PlateauReducer:
    """Multiply the learning rate by `factor` after `patience` epochs without improvement (min_delta 1e-4, as Keras)."""

    optimizer: Optimizer
    factor: float
    patience: int
    min_lr: float = 0.0
    min_delta: float = 1e-4
    best: float = float("inf")
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when the learning rate was reduced."""
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        self.wait = 0
        reduced = False
        for group in self.optimizer.param_groups:
            new = max(group["lr"] * self.factor, self.min_lr)
            reduced |= new < group["lr"]
            group["lr"] = new
        return reduced

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
