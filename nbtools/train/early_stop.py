"""Early stopping with patience, min_delta and min_epochs (seed 001: stopped before the model woke up)."""

from __future__ import annotations

import math


class EarlyStopping:
    """Tracks the best value of the monitored metric.

    `update` returns True when the run should stop: `patience` epochs have passed without an
    improvement of more than `min_delta`, and at least `min_epochs` epochs have run. A NaN metric is
    never an improvement.
    """

    def __init__(self, mode: str, patience: int | None, min_delta: float = 0.0, min_epochs: int = 0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.patience, self.min_delta, self.min_epochs = mode, patience, min_delta, min_epochs
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        gain = self.best - value if self.mode == "min" else value - self.best
        return gain > self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and epoch >= self.min_epochs and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
