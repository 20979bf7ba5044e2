"""The validation metrics of a run's task, as one accumulator per pass: `update(outputs, targets)` per
batch on the device, `result(prefix, gather)` once at the end -> (metrics, what best_val.pt keeps).

`make_accumulator(task, loss_fn, threshold)` builds it from the run's task record (`run.task`):
classification keeps the (N, C) logits; segmentation only tp/fp/fn per case and class (never the logits:
best_val.pt keeps Dice per case); regression float64 sums, metrics in the user's units (the model's
outputs and the targets it is given are standardised with the recorded TargetScaler); a model with named
heads (MultiTaskLoss) one accumulator per head, its metrics named val_<head>_<metric>.

gather(t, how) joins the ranks under torchrun: how "cat" concatenates rows, "sum" adds (identity on one
process).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from nbtools.losses import main_output
from nbtools.tasks.classification import ClassificationAccumulator, _identity
from nbtools.tasks.regression import RegressionAccumulator, output_names
from nbtools.tasks.segmentation import DiceAccumulator, metric_name
from nbtools.tasks.target_scaling import TargetScaler


class SegmentationAccumulator:
    """Dice per case and foreground class (`DiceAccumulator`), counts kept on the device."""

    def __init__(self, num_classes: int, class_names=None) -> None:
        self.dice = DiceAccumulator(num_classes, class_names)

    def update(self, outputs, targets: torch.Tensor) -> None:
        self.dice.update(main_output(outputs), targets)

    def result(self, prefix: str = "val_", gather: Callable = _identity) -> tuple[dict, dict]:
        counts = gather(self.dice.counts(), "cat").cpu().numpy()  # the pass's one read of the counts
        metrics = self.dice.compute(prefix, counts=counts)
        kept = {"dice_per_case": torch.from_numpy(self.dice.per_case), "tpfpfn": torch.from_numpy(self.dice.tpfpfn),
                "classes": list(self.dice.class_names)}  # fmt: skip
        return metrics, kept


class RegressionValidation:
    """MAE, RMSE, R^2 in the user's units. scaler: the training targets' TargetScaler when the model
    trains on standardised targets (outputs are then standardised; targets come in user units)."""

    def __init__(self, scaler: TargetScaler | None, names=None, loss_fn=None) -> None:
        self.scaler = scaler
        self.acc = RegressionAccumulator(scaler, names=names, loss_fn=loss_fn)
        self._pred: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []

    def update(self, outputs, targets: torch.Tensor) -> None:
        out = main_output(outputs).detach().float()
        y = targets.detach()
        z = self.scaler.standardise(y) if self.scaler is not None else y
        self.acc.update(out, z)
        # a few numbers per sample, for the report's scatter: predictions and targets in user units
        pred = self.scaler.unstandardise(out) if self.scaler is not None else out
        self._pred.append(pred.reshape(len(pred), -1))
        self._true.append(y.float().reshape(len(y), -1))

    def result(self, prefix: str = "val_", gather: Callable = _identity) -> tuple[dict, dict]:
        totals = gather(self.acc.totals(), "sum") if self.scaler is not None else None
        metrics = self.acc.compute(prefix, totals=totals)
        kept = {"predicted": gather(torch.cat(self._pred), "cat").cpu(),
                "targets": gather(torch.cat(self._true), "cat").cpu()}  # fmt: skip
        return metrics, kept


class HeadsAccumulator:
    """One accumulator per named head of a MultiTaskLoss, metrics prefixed with the head's name."""

    def __init__(self, loss_fn, parts: dict) -> None:
        self.loss_fn, self.parts = loss_fn, parts

    def update(self, outputs, targets) -> None:
        outs, tgts = self.loss_fn._pick(outputs, "outputs"), self.loss_fn._pick(targets, "targets")
        for name, acc in self.parts.items():
            acc.update(outs[name], tgts[name])

    def result(self, prefix: str = "val_", gather: Callable = _identity) -> tuple[dict, dict]:
        metrics, kept = {}, {}
        for name, acc in self.parts.items():
            m, k = acc.result(f"{prefix}{name}_", gather)
            metrics |= m
            kept[name] = k
        return metrics, {"heads": kept}


def _one(task: dict, loss_fn, threshold: float):
    name = task.get("name", "classification")
    if name == "segmentation":
        return SegmentationAccumulator(int(task["num_classes"]), task.get("classes"))
    if name == "regression":
        scaler = task.get("target_scaler")
        scaler = TargetScaler.from_dict(scaler) if scaler is not None else None
        return RegressionValidation(scaler, task.get("output_names"), loss_fn)
    if name == "classification":
        return ClassificationAccumulator(threshold)
    raise ValueError(f"no validation metrics for task {name!r}")


def make_accumulator(task: dict, loss_fn=None, threshold: float = 0.5):
    """The accumulator of a run's task record (run.task: "name" and what that task needs), see the
    module docstring. loss_fn: the run's own loss (a MultiTaskLoss for named heads)."""
    if task.get("name") == "multitask":
        parts = {h: _one(t, loss_fn.losses[h], threshold) for h, t in task["heads"].items()}
        return HeadsAccumulator(loss_fn, parts)
    return _one(task, loss_fn, threshold)


def metric_names(task: dict) -> list[str]:
    """The names a validation pass of this task records that can be monitored (val_loss included)."""
    name = task.get("name", "classification")
    if name == "multitask":
        out = ["val_loss"]
        for head, t in task["heads"].items():
            out += [f"val_{head}_{m[4:]}" for m in metric_names(t)]
        return out
    if name == "segmentation":
        classes = task.get("classes") or ["background", *map(str, range(1, int(task["num_classes"])))]
        return ["val_loss", "val_dice", *(f"val_dice_{metric_name(c)}" for c in classes[1:])]
    if name == "regression":
        names = ["val_loss", "val_mae", "val_rmse", "val_r2"]
        scaler = task.get("target_scaler")
        shape = scaler["shape"] if scaler is not None else task.get("shape")
        if shape is not None and 1 < int(np.prod(shape)) <= 8:
            outs = output_names(task.get("output_names"), tuple(shape))
            names += [f"val_{m}_{o}" for m in ("mae", "rmse", "r2") for o in outs]
        return names
    return ["val_loss", "val_acc", "val_precision", "val_recall", "val_f1", "val_auc"]
