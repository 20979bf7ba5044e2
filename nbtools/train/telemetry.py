"""Per-step numbers kept on the device and read once per log interval (one host sync per interval).

Each interval becomes one record in `run.steps`:
    epoch, step (global optimizer step at the end), steps (in the interval), loss (mean over good
    steps), loss_first and loss_last (the interval's first and last step; the run's very first step
    is its loss before any update, a reference no LR moves), grad_norm (mean over good steps), grad_norm_max, group_grad_norm {group: mean},
    lr {group: lr}, scale (fp16 GradScaler scale, else None), skipped (count), skipped_steps [...],
    nonfinite_loss (count of skipped steps whose loss itself was non-finite), drift (L2 distance the
    model's parameters moved over the interval, measured on the model itself, never on the EMA
    copy: seed 002 lost days to a drift probe that read the EMA), param_norm, seconds.
With a loss that reports its terms (`terms`: fit's TaskLoss over a MultiTaskLoss, deep supervision, Dice +
CE): loss_terms {term: mean over the interval's finite steps}, nonfinite_terms [terms non-finite at some
step], term_loss {head: unweighted loss} for named heads, and the per-term gradients of one step of the
interval (term_grad, term_cos, term_weight, term_params: nbtools.step.term_grads, read by the doctor's
nbtools.diagnose.term_rules).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from nbtools.step import StepResult
from nbtools.step.buffers import like_groups, views_of
from nbtools.train.task_loss import term_fields


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _total(norms: list[float]) -> float:
    """The norm of all the tensors whose norms these are (non-finite if one is)."""
    return math.hypot(*norms)


class Telemetry:
    def __init__(self, group_names: list[str], reduce=lambda t: t, terms=None):
        self.group_names = group_names
        self.terms = terms if hasattr(terms, "take_terms") else None  # fit's TaskLoss
        self.term_names: list[str] = []
        if self.terms is not None:
            self.terms.arm()  # the first step of the first interval is probed
        self.reduce = reduce  # the mean over torchrun ranks (identity on one process)
        self.rows: list[tuple[torch.Tensor, ...]] = []  # per step: loss, grad_norm[, group norms...]
        self.params: list[torch.Tensor] = []
        self.snapshot: list[torch.Tensor] = []  # views of self.flats, one per parameter
        self.flats: list[torch.Tensor] = []
        self.t0 = time.perf_counter()

    def start_interval(self, model: nn.Module) -> None:
        """A new interval at an epoch's start: `model`'s parameters (its trainable set is fixed within an
        epoch) are the ones whose drift and norm the records give; `flush` starts each next interval."""
        with torch.no_grad():
            self.params = list(model.parameters())
            # The copy of the parameters at the interval's start: views of one flat tensor per group of
            # like parameters (as the buffer guard's), so that the drift and the size are one norm each
            # over the flat tensors, one kernel on a GPU; a norm over the list (get_total_norm) is a
            # multi-tensor norm per chunk of tensors, its cleanup, a stack and a norm of the norms: ~10
            # more launches an interval at ResNet-50-3D.
            self.flats, views = [], {}
            for group in like_groups(self.params):
                flat = group[0].new_empty(sum(q.numel() for q in group))
                self.flats.append(flat)
                views.update(zip(map(id, group), views_of(flat, group)))
            self.snapshot = [views[id(q)] for q in self.params]
            if self.params:
                torch._foreach_copy_(self.snapshot, self.params)
        self.rows = []
        self.t0 = time.perf_counter()

    def record(self, r: StepResult) -> None:
        # The step's () tensors, kept as they are: no op and no wait for the GPU; `flush` stacks them.
        # Its skip flag is not kept: a step was skipped exactly when its loss or gradient norm is not
        # finite (nbtools.step.train_step), which the values read show (under torchrun: the ranks'
        # mean loss, non-finite when one rank's is; the gradient norm is the same on all ranks).
        groups = r.group_norms if len(r.group_norms) > 1 else ()  # one group: its norm is the total
        row = (r.loss, r.grad_norm, *groups)
        taken = self.terms.take_terms() if self.terms is not None else None
        if taken is not None and not self.term_names:
            self.term_names = list(taken)  # the run's terms, in the order of its first step
        if self.term_names:  # the term values go last in each row (NaN for a term a step did not give)
            taken = taken or {}
            if any(n not in taken for n in self.term_names):  # rare: an op only then
                nan = torch.full_like(r.loss, float("nan"))
                taken = {n: taken.get(n, nan) for n in self.term_names}
            row += tuple(taken[n] for n in self.term_names)
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def flush(self, epoch: int, step: int, lrs: list[float], scale: float | None) -> dict:
        # Six ops however many steps and parameters (one group of like ones): the parameters' distance
        # from the snapshot (snapshot - params, exactly -(params - snapshot)) in place, its norm, the
        # snapshot refilled for the next interval, its norm (the parameters' size), then one stack of
        # them and of every step's () float values (all float: a stack of mixed dtypes converts each).
        with torch.no_grad():
            if self.params:
                torch._foreach_sub_(self.snapshot, self.params)
            norms = [torch.linalg.vector_norm(f) for f in self.flats]
            if self.params:
                torch._foreach_copy_(self.snapshot, self.params)
            norms += [torch.linalg.vector_norm(f) for f in self.flats]
            flat = torch.stack([t for row in self.rows for t in row] + norms)
            values = self.reduce(flat).tolist()  # the interval's one host sync
        n, k, p = len(self.rows), len(self.rows[0]), len(self.flats)  # steps, values per step, groups
        t = len(self.term_names)  # term values per step
        loss, grad = values[0 : n * k : k], values[1 : n * k : k]  # per step
        # one column per group; a single group's norm is the total
        groups = [values[2 + g : n * k : k] for g in range(k - 2 - t)] or [grad]
        term_rows = [values[i * k + k - t : i * k + k] for i in range(n)] if t else []
        isfinite = math.isfinite
        bad = [not (isfinite(a) and isfinite(g)) for a, g in zip(loss, grad)]
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
            "nonfinite_loss": sum(not isfinite(v) for v in loss) if skipped else 0,  # each of them skipped
            "drift": _total(values[end - 2 * p : end - p]),
            "param_norm": _total(values[end - p :]),
            "seconds": time.perf_counter() - self.t0,
        }
        if t:
            record |= term_fields(self.terms, self.term_names, term_rows)
        if self.terms is not None:
            record |= self.terms.take_probe()  # the probed step's gradients (one read), then the next's
            self.terms.arm()
        self.rows = []
        self.t0 = time.perf_counter()
        return record
