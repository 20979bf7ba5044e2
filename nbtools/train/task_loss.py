"""The run's loss as `fit` trains it: the user's loss, with regression targets standardised (per head too)
and each term it reports (`with_terms`: MultiTaskLoss heads, deep-supervision outputs, Dice/CE parts)
kept for the telemetry, and once per log interval the per-term gradients (nbtools.step.term_grads).

Standardising here, at the loss, means every path that computes the loss (the step, validation, the
guards' diagnosis, the overfit test) sees the targets in the same units; the model's outputs are then
standardised predictions, and the task's metrics map them back (nbtools.tasks.validation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nbtools.losses.multitask import MultiTaskLoss
from nbtools.step.term_grads import TermGradProbe
from nbtools.tasks.target_scaling import TargetScaler


class TaskLoss(nn.Module):
    """loss(outputs, standardised targets); `task` is the run's task record (run.task).

    scalers: {None: scaler} for a regression run, {head: scaler} for regression heads of a MultiTaskLoss.
    probe: a TermGradProbe for a MultiTaskLoss run (None otherwise): `arm()` makes the next training call
    measure the per-term gradients on its own graph, before the step's backward."""

    def __init__(self, loss: nn.Module, task: dict, scalers: dict | None = None, probe=None, scale=None):
        super().__init__()
        self.loss, self.task = loss, task
        self.scalers: dict = dict(scalers or {})
        self.probe, self.scale = probe, scale  # scale(): the GradScaler's scale tensor under fp16, else None
        self.terms: list[dict[str, torch.Tensor]] = []  # one dict per training call since `take_terms`
        self.found = None  # the last probe's TermGrads
        self.armed = False
        self._stats: dict = {}  # (head, device) -> the scaler's (mean, std) there: no copy per step

    def _standardised(self, head, y: torch.Tensor) -> torch.Tensor:
        scaler = self.scalers[head]
        key = (head, y.device)
        if key not in self._stats:
            mean = torch.tensor(scaler.mean, dtype=torch.float64, device=y.device).reshape(scaler.shape)
            self._stats[key] = (
                mean,
                torch.tensor(scaler.std, dtype=torch.float64, device=y.device).reshape(scaler.shape),
            )
        if tuple(y.shape[1:]) != tuple(scaler.shape):
            scaler.standardise(y)  # raises, naming both shapes
        mean, std = self._stats[key]
        return ((y.double() - mean) / std).to(y.dtype if y.dtype == torch.float64 else torch.float32)

    def standardise(self, targets):
        """Regression targets (the whole target, or those of regression heads) as (y - mean) / std."""
        if not self.scalers:
            return targets
        if None in self.scalers:
            return self._standardised(None, targets)
        picked = dict(self.loss._pick(targets, "targets"))
        for head in self.scalers:
            picked[head] = self._standardised(head, picked[head])
        if isinstance(targets, (list, tuple)):
            out = list(targets)
            for head, value in picked.items():
                out[self.loss.positions[head]] = value
            return type(targets)(out)
        keys = {str(k): k for k in targets}
        return {**targets, **{keys[h]: v for h, v in picked.items()}}

    def with_terms(self, outputs, targets):
        y = self.standardise(targets)
        if hasattr(self.loss, "with_terms"):
            return self.loss.with_terms(outputs, y)
        return self.loss(outputs, y), {}

    def forward(self, outputs, targets) -> torch.Tensor:
        total, terms = self.with_terms(outputs, targets)
        if terms and total.requires_grad:  # a training call (validation and preflight run without grad)
            self.terms.append({k: v.detach() for k, v in terms.items()})
            if self.armed and self.probe is not None:
                self.armed = False
                heads = {n: terms[n] for n in self.loss.names}
                self.found = self.probe(heads, self.scale() if self.scale is not None else None)
        return total

    def arm(self) -> None:
        self.armed = self.probe is not None

    def take_terms(self) -> dict[str, torch.Tensor] | None:
        """{term: () mean over the calls since the last take} on the device, or None without terms."""
        calls, self.terms = self.terms, []
        if len(calls) <= 1:  # one micro-batch a step: its values as they are, no op
            return calls[0] if calls else None
        names = calls[-1].keys()
        return {n: torch.stack([c[n] for c in calls if n in c]).mean() for n in names}

    def take_probe(self) -> dict:
        """The telemetry fields of the last probe (one host read), or {}."""
        found, self.found = self.found, None
        if found is None:
            return {}
        return found.record(self.loss.weights)


def term_fields(loss: nn.Module, names: list[str], means: list[list[float]]) -> dict:
    """Telemetry fields from each step's term values (means[step][i] for names[i]): loss_terms {name: mean
    over the finite steps} (None where none was), nonfinite_terms [names non-finite at some step] and, for
    a MultiTaskLoss, term_loss {head: unweighted loss} (what the doctor's term rules read)."""
    isfinite = math.isfinite
    out, bad = {}, []
    for i, n in enumerate(names):
        values = [row[i] for row in means]
        good = [v for v in values if isfinite(v)]
        out[n] = sum(good) / len(good) if good else None
        if len(good) < len(values):
            bad.append(n)
    fields = {"loss_terms": out, "nonfinite_terms": bad}
    inner = getattr(loss, "loss", None)
    if isinstance(inner, MultiTaskLoss):
        fields["term_loss"] = {h: out.get(f"{h}.raw") for h in inner.names}
    return fields


def wrap_loss(loss_fn, task: dict, model: nn.Module, precision) -> TaskLoss:
    """The TaskLoss of a run whose task record is `task` (scalers read from it)."""
    scalers = {}
    if task.get("target_scaler") is not None:
        scalers[None] = TargetScaler.from_dict(task["target_scaler"])
    for head, t in (task.get("heads") or {}).items():
        if t.get("target_scaler") is not None:
            scalers[head] = TargetScaler.from_dict(t["target_scaler"])
    probe = TermGradProbe(model) if isinstance(loss_fn, MultiTaskLoss) and len(loss_fn.names) >= 2 else None

    def scale():  # the fp16 GradScaler's scale, a device tensor (no host read); precision may fall back
        return precision.scaler._scale if precision.scaler.is_enabled() else None

    return TaskLoss(loss_fn, task, scalers, probe, scale)
