"""Per-step numbers kept on the device and read once per log interval (one host sync per interval).

Each interval becomes one record in `run.steps`:
    epoch, step (global optimizer step at the end), steps (in the interval), loss (mean over good
    steps), loss_first and loss_last (the interval's first and last step; the run's very first step
    is its loss before any update, a reference no LR moves), grad_norm (mean over good steps), grad_norm_max, group_grad_norm {group: mean},
    lr {group: lr}, scale (fp16 GradScaler scale, else None), skipped (count), skipped_steps [...],
    nonfinite_loss (count of skipped steps whose loss itself was non-finite), drift (L2 distance the
    model's parameters moved over the interval, measured on the model itself, never on the EMA
    copy: seed 002 lost days to a drift probe that read the EMA), param_norm, seconds.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from nbtools.step import StepResult


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


class Telemetry:
    def __init__(self, group_names: list[str], reduce=lambda t: t):
        self.group_names = group_names
        self.reduce = reduce  # the mean over torchrun ranks (identity on one process)
        self.rows: list[tuple[torch.Tensor, ...]] = []
        self.params: list[torch.Tensor] = []
        self.snapshot: list[torch.Tensor] = []
        self.t0 = time.perf_counter()

    @torch.no_grad()
    def start_interval(self, model: nn.Module | None = None) -> None:
        """A new interval; with `model` (at an epoch's start: its trainable set is fixed within one),
        the parameters whose drift and norm the records give."""
        if model is not None:
            self.params = list(model.parameters())
        self.rows = []
        # a copy in one multi-tensor op (x * 1.0 keeps -0.0, inf and NaN; torch 2.11, Colab's, has no _foreach_clone)
        self.snapshot = torch._foreach_mul(self.params, 1.0)
        self.t0 = time.perf_counter()

    def record(self, r: StepResult) -> None:
        # The step's () tensors, kept as they are: no op and no wait for the GPU; `flush` stacks them.
        groups = r.group_norms if len(r.group_norms) > 1 else ()  # one group: its norm is the total
        self.rows.append((r.loss, r.bad, r.grad_norm, *groups))

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def flush(self, epoch: int, step: int, lrs: list[float], scale: float | None) -> dict:
        # multi-tensor ops: a fixed handful of ops however many parameters the model has
        drift = _total_norm(torch._foreach_sub(self.params, self.snapshot))
        norm = _total_norm(self.params)
        flat = self.reduce(
            torch.stack([*(t for row in self.rows for t in row), drift, norm])
        )  # bad: 0.0 or 1.0
        values = flat.tolist()  # the one host sync of the interval
        k = len(self.rows[0])
        rows = [values[i * k : (i + 1) * k] for i in range(len(self.rows))]
        if k == 3:  # one group: its norm is the total
            rows = [[*r, r[2]] for r in rows]
        good = [r for r in rows if not r[1]]
        first = step - len(rows) + 1
        skipped = [first + i for i, r in enumerate(rows) if r[1]]
        record = {
            "epoch": epoch,
            "step": step,
            "steps": len(rows),
            "loss": _mean([r[0] for r in good]),
            "loss_first": rows[0][0],
            "loss_last": rows[-1][0],
            "grad_norm": _mean([r[2] for r in good]),
            "grad_norm_max": max((r[2] for r in good), default=None),
            "group_grad_norm": {g: _mean([r[3 + i] for r in good]) for i, g in enumerate(self.group_names)},
            "lr": dict(zip(self.group_names, lrs)),
            "scale": scale,
            "skipped": len(skipped),
            "skipped_steps": skipped,
            "nonfinite_loss": sum(1 for r in rows if r[1] and not math.isfinite(r[0])),
            "drift": values[-2],
            "param_norm": values[-1],
            "seconds": time.perf_counter() - self.t0,
        }
        self.start_interval()
        return record
