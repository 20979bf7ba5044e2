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


def _total(norms: list[float]) -> float:
    """The norm of all the tensors whose norms these are (inf or NaN if one is, as torch's)."""
    return math.sqrt(sum(x * x for x in norms))


class Telemetry:
    def __init__(self, group_names: list[str], reduce=lambda t: t):
        self.group_names = group_names
        self.reduce = reduce  # the mean over torchrun ranks (identity on one process)
        self.rows: list[tuple[torch.Tensor, ...]] = []  # per step: skipped, loss, grad_norm[, group norms...]
        self.params: list[torch.Tensor] = []
        self.snapshot: list[torch.Tensor] = []
        self.t0 = time.perf_counter()

    def start_interval(self, model: nn.Module | None = None) -> None:
        """A new interval; with `model` (at an epoch's start: its trainable set is fixed within one),
        the parameters whose drift and norm the records give."""
        with torch.no_grad():  # (a with, not the decorator: this runs at every interval)
            if model is not None:
                self.params = list(model.parameters())
                # a copy in one multi-tensor op (x * 1.0 keeps -0.0, inf and NaN; Colab's torch 2.11 has no
                # _foreach_clone)
                self.snapshot = torch._foreach_mul(self.params, 1.0)
            else:  # the same parameters: the copy refilled in place
                torch._foreach_copy_(self.snapshot, self.params)
        self.rows = []
        self.t0 = time.perf_counter()

    def record(self, r: StepResult) -> None:
        # The step's () tensors, kept as they are: no op and no wait for the GPU; `flush` stacks them.
        groups = r.group_norms if len(r.group_norms) > 1 else ()  # one group: its norm is the total
        self.rows.append((r.skipped, r.loss, r.grad_norm, *groups))

    def __len__(self) -> int:
        return len(self.rows)

    def flush(self, epoch: int, step: int, lrs: list[float], scale: float | None) -> dict:
        # Five ops however many steps and parameters: one foreach norm of each parameter's distance from
        # the snapshot (snapshot - params, exactly -(params - snapshot)) and of its size, then one stack
        # of them and of every step's () float values (all float: a stack of mixed dtypes converts each).
        with torch.no_grad():
            torch._foreach_sub_(self.snapshot, self.params)
            norms = torch._foreach_norm([*self.snapshot, *self.params])
            flat = torch.stack([*(t for row in self.rows for t in row), *norms])
            values = self.reduce(flat).tolist()  # the interval's one host sync
        n, k, p = len(self.rows), len(self.rows[0]), len(self.params)  # steps, values per step, params
        bad, loss, grad = values[0 : n * k : k], values[1 : n * k : k], values[2 : n * k : k]  # per step
        # one column per group; a single group's norm is the total
        groups = [values[3 + g : n * k : k] for g in range(k - 3)] or [grad]
        first = step - n + 1
        skipped = [first + i for i in range(n) if bad[i]]

        def good(column: list[float]) -> list[float]:
            return column if not skipped else [v for v, b in zip(column, bad) if not b]

        good_grad = good(grad)
        end = len(values)
        record = {
            "epoch": epoch,
            "step": step,
            "steps": n,
            "loss": _mean(good(loss)),
            "loss_first": loss[0],
            "loss_last": loss[-1],
            "grad_norm": _mean(good_grad),
            "grad_norm_max": max(good_grad, default=None),
            "group_grad_norm": {name: _mean(good(g)) for name, g in zip(self.group_names, groups)},
            "lr": dict(zip(self.group_names, lrs)),
            "scale": scale,
            "skipped": len(skipped),
            "skipped_steps": skipped,
            "nonfinite_loss": sum(1 for v, b in zip(loss, bad) if b and not math.isfinite(v)),
            "drift": _total(values[end - 2 * p : end - p]),
            "param_norm": _total(values[end - p :]),
            "seconds": time.perf_counter() - self.t0,
        }
        self.start_interval()
        return record
