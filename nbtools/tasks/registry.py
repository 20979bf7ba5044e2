"""The tasks by name: what each monitors (and in which direction), how `fit` tells a run's task from
its first batch, and the check that a monitor is one the task records.

    TASKS[name].monitors   {metric: "min" | "max"} of the metrics every run of the task records
    TASKS[name].monitor    the one a recipe follows (ties broken by val_loss)

TrainConfig.monitor_mode reads the direction from the metric word (loss, mae, rmse: lower is better);
the tests hold it to these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nbtools.losses import main_output
from nbtools.losses.multitask import LABEL_LOSSES, REGRESSION_LOSSES, MultiTaskLoss
from nbtools.tasks import classification, regression, segmentation
from nbtools.tasks.validation import metric_names

NAMES = ("classification", "segmentation", "regression")


@dataclass(frozen=True)
class Task:
    name: str
    monitors: dict[str, str]
    monitor: str


TASKS = {
    "classification": Task("classification", classification.MONITORS, classification.MONITOR),
    "segmentation": Task(
        "segmentation",
        {"val_loss": "min", segmentation.MONITOR: segmentation.MONITOR_MODE},
        segmentation.MONITOR,
    ),
    "regression": Task("regression", {"val_loss": "min", **regression.MONITORS}, regression.MONITOR),
}


def _integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex()


def _labels_01(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


def infer_task(outputs, targets, loss_fn) -> str:
    """The task of an (outputs, targets) pair of a first batch: "multitask" for a MultiTaskLoss; an
    integer map with the output's spatial dims: "segmentation"; float targets under a regression loss
    (torch's MSE/L1/Huber), or under a loss of the user's own when they are not all 0/1: "regression";
    else "classification". Raises ValueError naming both shapes when the pair fits none."""
    if isinstance(loss_fn, MultiTaskLoss):
        return "multitask"
    out = main_output(outputs)
    if not isinstance(targets, torch.Tensor) or not isinstance(out, torch.Tensor):
        raise ValueError(
            f"the model's outputs ({type(out).__name__}) and targets ({type(targets).__name__}) fit no task: "
            "a tensor of each is expected (named heads as dicts take nbt.losses.MultiTaskLoss)"
        )
    if segmentation.is_segmentation_pair(out, targets):
        return "segmentation"
    floats = targets.is_floating_point()
    if floats and isinstance(loss_fn, REGRESSION_LOSSES):
        return "regression"
    if floats and not isinstance(loss_fn, LABEL_LOSSES) and not _labels_01(targets):
        return "regression"
    per_sample = targets.dim() <= 1 or (targets.dim() == 2 and targets.shape[1] in (1, out.shape[-1]))
    if out.dim() <= 2 and per_sample:
        return "classification"
    if floats and out.dim() >= 3 and tuple(targets.shape) == tuple(out.shape):
        return "segmentation"  # one-hot or soft masks shaped like the logits
    raise ValueError(
        f"the model's output {tuple(out.shape)} and the target {targets.dtype} {tuple(targets.shape)} fit no "
        "task: classification takes (B, C) logits and (B,) class indices; segmentation (B, C, *spatial) "
        "logits and (B, *spatial) integer masks of the same spatial size; regression float targets of "
        "the output's shape. Check the model's head and what the dataset returns"
    )


def check_task(name: str, inferred: str, outputs, targets) -> str:
    """The task to train: `name` (TrainConfig.task) unless "auto", when `inferred`. A named task the
    pair cannot be is refused, naming both shapes."""
    if name == "auto" or name == inferred:
        return inferred
    out = main_output(outputs)
    shapes = f"output {tuple(out.shape)}, target {targets.dtype} {tuple(targets.shape)}"
    if name == "segmentation" and not segmentation.is_segmentation_pair(out, targets):
        raise ValueError(
            f"task='segmentation' needs (B, C, *spatial) logits and (B, *spatial) integer masks; the first batch "
            f"has {shapes}"
        )
    if name == "regression":
        regression.check_pair(out, targets)
    if name == "classification" and (out.dim() > 2 or (not _integer(targets) and not _labels_01(targets))):
        raise ValueError(
            f"task='classification' needs (B, C) logits and class labels; the first batch has {shapes}"
        )
    return name


def check_monitor(monitor: str, task: dict) -> None:
    """Refuse a monitor this run's validation will not record, naming the ones it will."""
    names = metric_names(task)
    if monitor not in names:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise ValueError(
            f"TrainConfig.monitor={monitor!r} is not recorded by this run's task ({task.get('name')}): "
            f"its validation records {shown}; pick one of them"
        )
