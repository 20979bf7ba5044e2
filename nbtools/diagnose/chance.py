"""The chance level of a task, and `lr-too-high`: an early loss far above references no LR moves.

When `fit` starts it records in `run.task` what the rules need to know about the task, from what it
sees: the model's output on the first batch (how many outputs) and the training labels.

    outputs      the main output's size per sample: C for (B, C) logits, 1 for (B,) or (B, 1)
    pos_rate     the share of label 1 in the training labels (binary tasks), else None
    chance_loss  the run's own loss_fn on the outputs of a model that ignores its input: uniform
                 logits for C >= 2 outputs (ln C for cross-entropy), the prior's logit
                 log(p / (1 - p)) for one output (the prior's BCE, or its focal value); None when the
                 loss cannot take such outputs or the labels hold one class only
    labels       where the labels came from: "dataset" (every training label, read by
                 data.samples.labels_of without loading a sample) or "first batch"

`lr-too-high` compares the early train loss with two references that no LR can move: `chance_loss`
and the loss of the run's first step (taken before any update; it is telemetry's `loss_first` of
the first interval). It fires when, within the first LR_EARLY_EPOCHS = 3 epochs, either
- LR_RISE_INTERVALS = 2 log intervals have a mean train loss above LR_CHANCE_FACTOR = 3 times the
  larger reference (an interval whose every loss was non-finite, after such an interval, counts as
  one): the loss exploded, possibly within the first interval; or
- LR_RISE_INTERVALS intervals have a mean loss above LR_RISE_FACTOR = 2 times the first interval's:
  the loss rose (the only test for an older metrics.json, which records no reference).
It is open while the latest interval is still above that bound (or all non-finite), and resolved at
the epoch of the first interval of the trailing stretch back below it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from nbtools.data.samples import labels_of
from nbtools.losses import main_output
from nbtools.runs.classes import class_names, positive_name
from nbtools.runs.findings import Finding, status_from
from nbtools.tasks.regression import chance_loss
from nbtools.tasks.target_scaling import TargetScaler

log = logging.getLogger(__name__)

LR_EARLY_EPOCHS, LR_RISE_FACTOR, LR_RISE_INTERVALS = 3, 2.0, 2
LR_CHANCE_FACTOR = 3.0


@contextlib.contextmanager
def first_output(model: nn.Module, enabled: bool = True) -> Iterator[list]:
    """A list that receives the model's output (detached) at its first forward inside the block,
    when `enabled`. The hook is gone when the block ends, whatever happens in it; it changes nothing."""
    box: list = []
    if not enabled:
        yield box
        return

    def hook(module, args, out):
        if not box:
            box.append(_detach(out))

    handle = model.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _detach(out):
    if isinstance(out, (list, tuple)):
        return type(out)(_detach(o) for o in out)
    return out.detach() if isinstance(out, torch.Tensor) else out


def _chance_outputs(outputs, n: int, logit: float):
    """Outputs shaped like `outputs` (n samples) of a model that predicts `logit` for everything."""
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_chance_outputs(o, n, logit) for o in outputs)
    return torch.full((n, *outputs.shape[1:]), logit, dtype=torch.float32, device=outputs.device)


def _regression_record(outputs, loss_fn, data, batch_labels: torch.Tensor, task: dict) -> dict:
    """A regression run's chance level: its loss when every prediction is the training mean, over the
    training targets (standardised, as the loss sees them: about 1 for MSE)."""
    labels = labels_of(data)
    source = "dataset" if labels is not None else "first batch"
    y = (labels if labels is not None else batch_labels).to(batch_labels.device, batch_labels.dtype)
    scaler = TargetScaler.from_dict(task["target_scaler"])
    chance = chance_loss(getattr(loss_fn, "loss", loss_fn), y.reshape(len(y), *scaler.shape), scaler)
    n_out = int(main_output(outputs)[0].numel())
    return {"outputs": n_out, "pos_rate": None, "chance_loss": chance, "labels": source}


def task_record(outputs, loss_fn: Callable, data, batch_labels) -> dict:
    """`run.task` (see the module docstring) from the model's outputs on the first batch, the loss,
    the training data and the first batch's labels. A loss fit wraps (TaskLoss) carries the task: a
    regression run's chance level is the loss of predicting the training mean; a run with named heads
    records none (each head's is its own)."""
    task = getattr(loss_fn, "task", None) or {}
    if task.get("name") == "multitask" or not isinstance(batch_labels, torch.Tensor):
        return {"outputs": None, "pos_rate": None, "chance_loss": None, "labels": "first batch"}
    if task.get("name") == "regression" and task.get("target_scaler"):
        return _regression_record(outputs, loss_fn, data, batch_labels, task)
    main = main_output(outputs)
    n_out = int(main.shape[1]) if main.dim() >= 2 else 1
    labels = labels_of(data)
    small = all(t.dim() <= 2 for t in _tensors(outputs))  # classification logits, not masks
    source = "dataset" if labels is not None and small else "first batch"
    y = labels if source == "dataset" else batch_labels
    y = y.to(batch_labels.device, batch_labels.dtype).reshape(len(y), *batch_labels.shape[1:])
    binary = n_out <= 2 and (y.dim() == 1 or y[0].numel() == 1)
    pos_rate = float((y == 1).double().mean()) if binary and len(y) else None
    if n_out >= 2:
        logit = 0.0
    elif pos_rate is not None and 0.0 < pos_rate < 1.0:
        logit = math.log(pos_rate / (1.0 - pos_rate))
    else:
        logit = None  # one class only: no prior to predict
    chance = None
    if logit is not None:
        try:
            with torch.no_grad():
                chance = float(loss_fn(_chance_outputs(outputs, len(y), logit), y))
        except (TypeError, ValueError, RuntimeError) as e:  # a loss that cannot take plain logits
            log.info("no chance-level loss for %s: %s", type(loss_fn).__name__, e)
    if chance is not None and not math.isfinite(chance):
        chance = None
    return {"outputs": n_out, "pos_rate": pos_rate, "chance_loss": chance, "labels": source}


def _tensors(outputs) -> list[torch.Tensor]:
    if isinstance(outputs, (list, tuple)):
        return [t for o in outputs for t in _tensors(o)]
    return [outputs]


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _lrs(record: dict) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in record.get("lr", {}).items())


def _references(run) -> list[tuple[float, str]]:
    """The recorded references no LR moves, as (value, how to say it): the chance loss and the
    first step's loss."""
    task, first = getattr(run, "task", None) or {}, run.steps[0] if run.steps else {}
    refs = []
    chance = task.get("chance_loss")
    if chance is not None and chance > 0:
        if task.get("name") == "regression":
            what = "predicting the training mean"
        elif (task.get("outputs") or 1) >= 2:
            what = f"uniform logits over {task['outputs']} outputs"
        else:
            names = class_names(getattr(run, "meta", None))
            positive = f"rate of {positive_name(names)}" if names else "positive rate"
            what = f"predicting the training prior, {positive} {_g(task.get('pos_rate'))}"
        refs.append((chance, f"the chance level {_g(chance)} ({what})"))
    loss0 = first.get("loss_first")
    if loss0 is not None and math.isfinite(loss0) and loss0 > 0 and first["step"] == first["steps"]:
        refs.append((loss0, f"the first step's loss {_g(loss0)}"))
    return refs


def _exploded(run, early: list[dict], nonfinite: int) -> Finding | None:
    refs = _references(run)
    if not refs:
        return None
    bound, over, seen = LR_CHANCE_FACTOR * max(v for v, _ in refs), [], False
    for r in early:
        exploded = r["loss"] is not None and r["loss"] > bound
        seen = seen or exploded
        if exploded or (seen and r["loss"] is None and r["nonfinite_loss"]):
            over.append(r)
    if len(over) < LR_RISE_INTERVALS:
        return None
    peak = max((r for r in over if r["loss"] is not None), key=lambda r: r["loss"])
    at = over[LR_RISE_INTERVALS - 1]
    found = Finding(
        "lr-too-high",
        f"the train loss reached {_g(peak['loss'])} (steps up to {peak['step']}): "
        + " and ".join(f"{peak['loss'] / v:.3g}x {text}" for v, text in refs)
        + f", levels no LR moves; {len(over)} intervals in the first {LR_EARLY_EPOCHS} epochs above "
        f"{LR_CHANCE_FACTOR:g}x the larger, {nonfinite} non-finite losses (lr {_lrs(over[0])})",
        "lower the LR (by 10x or more): nbt.find_lr(model, train_data, loss_fn) suggests one; add "
        "warmup_epochs and set clip_norm. Do not clamp the loss.",
        epoch=at["epoch"],
        step=at["step"],
    )
    return status_from(found, run.steps, lambda r: r["loss"] is None or r["loss"] > bound)


def _rose(run, early: list[dict], nonfinite: int) -> Finding | None:
    start = next((r for r in early if r["loss"] is not None), None)
    if start is None or start["loss"] <= 0:
        return None
    bound = LR_RISE_FACTOR * start["loss"]
    rising = [r for r in early if r["loss"] is not None and r["loss"] > bound]
    if len(rising) < LR_RISE_INTERVALS:
        return None
    peak = max(rising, key=lambda r: r["loss"])
    found = Finding(
        "lr-too-high",
        f"the train loss rose from {_g(start['loss'])} (steps up to {start['step']}) to {_g(peak['loss'])} "
        f"(up to step {peak['step']}) in the first {LR_EARLY_EPOCHS} epochs: {len(rising)} intervals above "
        f"{LR_RISE_FACTOR:g}x the start, {nonfinite} non-finite losses (lr {_lrs(rising[0])})",
        "lower the LR: nbt.find_lr(model, train_data, loss_fn) suggests one; add warmup_epochs and set "
        "clip_norm. Do not clamp the loss.",
        epoch=rising[LR_RISE_INTERVALS - 1]["epoch"],
        step=rising[LR_RISE_INTERVALS - 1]["step"],
    )
    return status_from(found, run.steps, lambda r: r["loss"] is None or r["loss"] > bound)


def lr_too_high(run) -> Finding | None:
    """`lr-too-high`: early intervals far above the chance level and the first step's loss, else
    LR_RISE_INTERVALS early intervals above LR_RISE_FACTOR x the first one's."""
    early = [r for r in run.steps if r["epoch"] <= LR_EARLY_EPOCHS]
    nonfinite = sum(r["nonfinite_loss"] for r in early)
    return _exploded(run, early, nonfinite) or _rose(run, early, nonfinite)
