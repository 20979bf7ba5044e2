"""A run's task, from its first batch to its record: `plan_task` (in preflight, before anything is
written) tells the task from the model's output and the targets, or takes TrainConfig.task, and refuses
a pair that fits none; `setup_task` (once the run is started or resumed) records it in run.task (a resume
keeps the recorded one), fits the regression targets' TargetScaler on the training set, starts a new
regression head's bias at the training mean, checks the monitor, and returns the loss fit trains with
(nbtools.train.task_loss.TaskLoss)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from nbtools.data.samples import split_sample
from nbtools.losses import main_output
from nbtools.losses.multitask import MultiTaskLoss
from nbtools.runs.classes import class_names
from nbtools.tasks.registry import check_monitor, check_task, infer_task
from nbtools.tasks.regression import check_pair
from nbtools.tasks.target_scaling import (
    TargetScaler,
    _from_moments,
    _refuse_nonfinite,
    target_stats,
    zero_final_bias,
)
from nbtools.train.task_loss import wrap_loss

log = logging.getLogger(__name__)


def _target_names(data) -> list[str] | None:
    """The dataset's `target_names` (RegressionFolder: the CSV's target columns), through Subsets."""
    while data is not None:
        names = getattr(data, "target_names", None)
        if isinstance(names, (list, tuple)) and names:
            return [str(n) for n in names]
        data = getattr(data, "dataset", None)
    return None


def _dataset_classes(data) -> list[str] | None:
    while data is not None:
        classes = getattr(data, "classes", None)
        if isinstance(classes, (list, tuple)) and classes:
            return [str(c) for c in classes]
        data = getattr(data, "dataset", None)  # through Subsets
    return None


def _plan_one(name: str, out, y, loss_fn, data, x) -> dict:
    main = main_output(out)
    if name == "segmentation":
        n = int(main.shape[1]) if main.shape[1] > 1 else 2
        classes = _dataset_classes(data)
        plan = {"name": name, "num_classes": n, "patch": list(x.shape[2:])}
        if classes is not None and len(classes) == n:
            plan["classes"] = classes
        return plan
    if name == "regression":
        check_pair(main, y)
        bad = ~torch.isfinite(y).reshape(len(y), -1).all(1)
        if bool(bad.any()):
            raise ValueError("the regression target of training data[0] is not finite; fix or drop it")
        return {"name": name, "shape": list(y.shape[1:])}
    return {"name": name}


def plan_task(task: str, out, y, loss_fn, data, x, monitor: str | None = None) -> dict:
    """{"name": the task, ...what it needs: num_classes, classes and patch for segmentation, the target's
    shape for regression, heads for a MultiTaskLoss} from the model's output on the first training batch
    (x) and its targets y. monitor: refused here, before anything is written, when the task does not
    record it."""
    plan = _plan(task, out, y, loss_fn, data, x)
    if monitor is not None:
        check_monitor(monitor, plan)
    return plan


def _plan(task: str, out, y, loss_fn, data, x) -> dict:
    name = infer_task(out, y, loss_fn)
    if name != "multitask":
        return _plan_one(check_task(task, name, out, y), out, y, loss_fn, data, x)
    if task != "auto":
        raise ValueError(
            f"TrainConfig.task={task!r}, but the loss is a MultiTaskLoss: each head has its own task "
            "(MultiTaskLoss(..., tasks={head: task}) names one); leave task='auto'"
        )
    loss_fn.check(out, y)
    tasks = loss_fn.head_tasks(out, y)
    outs, tgts = loss_fn._pick(out, "outputs"), loss_fn._pick(y, "targets")
    heads = {h: _plan_one(t, outs[h], tgts[h], loss_fn.losses[h], None, x) for h, t in tasks.items()}
    return {"name": "multitask", "heads": heads}


def _head_stats(data, loss_fn: MultiTaskLoss, head: str) -> TargetScaler:
    """The TargetScaler of one head's targets over the training set (one pass over the samples)."""
    rows = []
    for i in range(len(data)):
        _, target, _ = split_sample(data[i])
        y = loss_fn._pick(target, "targets")[head]
        rows.append(torch.as_tensor(y).detach().cpu().double().numpy())
    y = np.stack(rows)
    _refuse_nonfinite(y, data)
    flat = y.reshape(len(y), -1)
    shift = flat[0]
    return _from_moments((flat - shift).sum(0), ((flat - shift) ** 2).sum(0), shift, len(y), y.shape[1:])


def _record(plan: dict, loss_fn, train_data, meta) -> dict:
    task = {k: v for k, v in plan.items() if k != "heads"}
    if task["name"] == "segmentation" and "classes" not in task:
        names = class_names(meta)
        if names is not None and len(names) == task["num_classes"]:
            task["classes"] = names
    if task["name"] == "regression":
        task["target_scaler"] = target_stats(train_data).to_dict()
        names = _target_names(train_data)  # a CSV's target columns name the per-output metrics
        if names is not None and len(names) == int(np.prod(task["target_scaler"]["shape"])):
            task["output_names"] = names
    if "heads" in plan:
        task["heads"] = {}
        for head, p in plan["heads"].items():
            part = dict(p)
            if part["name"] == "regression":
                part["target_scaler"] = _head_stats(train_data, loss_fn, head).to_dict()
            task["heads"][head] = part
    return task


def _zero_biases(models: list[nn.Module], task: dict, progress) -> None:
    """A new regression run: the head's bias at 0, the training mean in standardised units."""
    parts = [(None, task)] if task["name"] == "regression" else list((task.get("heads") or {}).items())
    for head, t in parts:
        if t["name"] != "regression":
            continue
        k = 1
        for s in t["target_scaler"]["shape"]:
            k *= s
        try:
            for m in models:
                layer = zero_final_bias(m, k)
        except ValueError as e:  # no single final Linear to tell: the head starts where the model put it
            who = f"head {head!r}: " if head else ""
            progress.message(f"{who}regression bias left as initialised ({e})")
            continue
        log.info("%sbias of %r starts at the training mean", f"head {head!r}: " if head else "", layer)


def setup_task(st, run, plan: dict, model: nn.Module, train_data, loss_fn, progress, new_run: bool, meta):
    """Record the task in run.task (a resume keeps the recorded one), check the monitor, and return the
    loss to train with (module docstring). st: the TrainState (its cfg, EMA copy and precision)."""
    cfg = st.cfg
    recorded = run.task.get("name")
    if recorded is None:
        run.task = {**run.task, **_record(plan, loss_fn, train_data, meta)}
    elif plan and plan.get("name") != recorded:
        raise ValueError(
            f"this run was recorded as a {recorded} run, but the data and model now fit {plan['name']} "
            f"(TrainConfig.task={cfg.task!r}): resume with the model, data and loss it started with"
        )
    if run.task:
        check_monitor(cfg.monitor, run.task)
    if new_run and run.task:
        _zero_biases([model] + ([st.ema.module] if st.ema is not None else []), run.task, progress)
    return wrap_loss(loss_fn, run.task, model, st.precision)
