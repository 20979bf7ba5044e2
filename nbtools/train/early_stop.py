"""The best epoch and early stopping: patience, min_delta and min_epochs (seed 001: stopped before the
model woke up), with ties of the monitored metric broken by the validation loss.

The best epoch (best.pt, run.best_epoch; the EMA's best likewise, on its own metrics). AUC, accuracy,
F1 and Dice saturate on a small validation set: 1.0 from epoch 3 on, and keeping the first epoch that
reached it kept a model whose probabilities were still poor (issue 25: best epoch 3 at val_acc 0.67,
while epochs 7-12 had val_acc 1 and a val loss ten to fifty times lower). An epoch is the new best when
its monitored value

- improves on the best epoch's by more than min_delta (an *improvement*), or
- ties it: is at least as good as the best epoch's value and better by at most min_delta, and its val
  loss is lower than the best epoch's (a tie *broken by the val loss*).

"At least as good" is exact: a tie never accepts a value worse than the best's, by however little, so a
run of ties cannot walk the monitored value down epoch by epoch under cover of min_delta; the best value
only ever moves the right way. A non-finite value is never the best; a tie needs a finite val loss.
When the monitor is val_loss itself there is nothing else to break a tie with (`tie_break=False`): only
improvements count, as before.

Patience counts the epochs since the best epoch last changed, so a tie broken by the val loss resets it,
as an improvement does. Patience asks "has the model stopped getting better?", and better is what the
best epoch says it is: not resetting would stop a saturated run `patience` epochs after it first
saturated while its val loss, and the model best.pt holds, still improved -- the early model the tie
break is there to avoid, now with no later epoch left to pick. min_delta keeps its meaning on the
monitored value (it is the margin an improvement needs and the most a tie may gain); the val loss that
breaks a tie has no margin, so once the metric has saturated, early stopping behaves as with
monitor="val_loss", min_delta=0. With min_delta=0 (the default) a run stops at the same epoch as it did
before ties were broken, or later, never earlier; with min_delta > 0 the margin is measured from the best
epoch's value, which a tie may have raised by up to min_delta.
"""

from __future__ import annotations

import math


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


class EarlyStopping:
    """Tracks the best epoch of the monitored metric (ties broken by val loss, see the module docstring).

    `is_best(value, loss)` says whether an epoch would be the new best; `update(value, epoch, loss)`
    records it and returns True when the run should stop: `patience` epochs have passed without a new
    best, and at least `min_epochs` epochs have run (patience None: never).

    >>> early = EarlyStopping("max", patience=2)
    >>> [early.update(auc, epoch, loss) for epoch, auc, loss in [(1, 0.9, 0.5), (2, 1.0, 0.3), (3, 1.0, 0.2)]]
    [False, False, False]
    >>> early.best_epoch, early.best, early.best_loss
    (3, 1.0, 0.2)
    """

    def __init__(
        self,
        mode: str,
        patience: int | None,
        min_delta: float = 0.0,
        min_epochs: int = 0,
        tie_break: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.patience, self.min_delta, self.min_epochs = mode, patience, min_delta, min_epochs
        self.tie_break = tie_break
        self.best: float | None = None
        # the val loss at the best epoch: inf when it was not finite (any finite loss is lower), None when
        # unknown (a checkpoint from before ties were broken whose history lacks it: no tie beats it)
        self.best_loss: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def is_best(self, value: float | None, loss: float | None = None) -> bool:
        """Would an epoch with this monitored value and val loss be the new best?"""
        if not _finite(value):
            return False
        if self.best is None:
            return True
        gain = self.best - value if self.mode == "min" else value - self.best
        if gain > self.min_delta:
            return True
        tie = self.tie_break and gain >= 0  # never a worse value, even within min_delta
        return tie and _finite(loss) and self.best_loss is not None and loss < self.best_loss

    def update(self, value: float | None, epoch: int, loss: float | None = None) -> bool:
        if self.is_best(value, loss):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_loss = loss if _finite(loss) else math.inf
        else:
            self.bad_epochs += 1
        return self.patience is not None and epoch >= self.min_epochs and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_loss": self.best_loss,
        }

    def load_state_dict(self, state: dict) -> None:
        """A state from `state_dict` (one from an older checkpoint: nbtools.runs.upgrade)."""
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_loss = state["best_loss"]
