"""Validation: the loss and the task's metrics of a model on a loader (nbtools.tasks.validation), the
metrics accumulated on the device and read once at the end. A segmentation run's volumes larger than its
training patches go through the model whole, by sliding window (nbtools.tasks.inference); their logits
are dropped batch by batch, so neither host nor device memory grows with the validation set."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from nbtools.losses import main_output
from nbtools.step import SINGLE_PROCESS, Distributed, Precision, as_float32
from nbtools.tasks.inference import sliding_window_predict
from nbtools.tasks.validation import make_accumulator
from nbtools.train.accel import as_input


def to_device(y, device: torch.device):
    """Targets on the device: a tensor, or a dict / tuple of them (named heads)."""
    if isinstance(y, dict):
        return {k: to_device(v, device) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return type(y)(to_device(v, device) for v in y)
    return y.to(device, non_blocking=True)


def _count(y) -> int:
    if isinstance(y, dict):
        return _count(next(iter(y.values())))
    if isinstance(y, (list, tuple)):
        return _count(y[0])
    return len(y)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    precision: Precision,
    loss_fn: Callable | None = None,
    dist: Distributed = SINGLE_PROCESS,
    channels_last: bool = False,
):
    """Main-output logits (float32, on the CPU), targets, and the mean loss (None without loss_fn).
    Under torchrun each rank predicts its shard and every rank gets all of them. channels_last: inputs
    in the model's channels-last format (TrainConfig.channels_last). For classification-sized outputs:
    a segmentation set's logits do not belong in host memory (`evaluate` keeps counts instead)."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    loss_sum = torch.zeros((), device=precision.device)
    n = 0
    try:
        for x, y in loader:
            x = as_input(x.to(precision.device, non_blocking=True), channels_last)
            y = y.to(precision.device, non_blocking=True)
            with precision.autocast():
                outputs = model(x)
            outputs = as_float32(outputs)
            if loss_fn is not None:
                loss_sum += loss_fn(outputs, y).detach() * len(y)
            logits.append(main_output(outputs))
            targets.append(y)
            n += len(y)
    finally:
        model.train(was_training)
    if not n and not dist.active:
        raise ValueError("the validation data is empty; pass a dataset with at least one sample")
    logits_all, targets_all = dist.gather_cat(torch.cat(logits)), dist.gather_cat(torch.cat(targets))
    loss = dist.mean(loss_sum) * dist.world / len(targets_all)
    return logits_all.cpu(), targets_all.cpu(), (float(loss.cpu()) if loss_fn is not None else None)


def _forward(model, x, precision: Precision, patch):
    """The model's outputs on x: whole, or by sliding window over patches of `patch` (a segmentation
    case of another size than the training patches: larger, or smaller and padded to it, as a U-Net
    takes only sides that are multiples of its downsampling), in float32."""
    if patch is not None and tuple(x.shape[2:]) != tuple(patch):
        return sliding_window_predict(model, x, patch, autocast=precision.autocast(), output="logits")
    with precision.autocast():
        outputs = model(x)
    return as_float32(outputs)


@torch.no_grad()
def evaluate(
    model,
    loader,
    precision,
    loss_fn,
    threshold: float = 0.5,
    prefix: str = "val_",
    dist=SINGLE_PROCESS,
    channels_last: bool = False,
    task: dict | None = None,
):
    """({prefix}loss and the task's metrics}, what best_val.pt keeps for the report figures).

    task: the run's task record (run.task); None reads it from a fit loss (TaskLoss.task), else the
    task is classification. A list of deep-supervision outputs that reaches the metrics is read as its
    main output; a model with named heads (MultiTaskLoss) also gets {prefix}<head>_loss (unweighted)."""
    task = task if task is not None else getattr(loss_fn, "task", None) or {"name": "classification"}
    inner = getattr(loss_fn, "loss", loss_fn)
    acc = make_accumulator(task, inner, threshold)
    patch = task.get("patch") if task.get("name") == "segmentation" else None
    heads = task.get("name") == "multitask" and hasattr(loss_fn, "with_terms")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=precision.device)
    head_sums: dict[str, torch.Tensor] = {}
    n = 0
    try:
        for x, y in loader:
            x = as_input(x.to(precision.device, non_blocking=True), channels_last)
            y = to_device(y, precision.device)
            outputs = _forward(model, x, precision, patch)
            b = _count(y)
            if heads:
                total, terms = loss_fn.with_terms(outputs, y)
                for h in inner.names:
                    head_sums[h] = head_sums.get(h, 0) + terms[f"{h}.raw"].detach().double() * b
            elif loss_fn is not None:
                total = loss_fn(outputs, y)
            if loss_fn is not None:
                loss_sum += total.detach().double() * b
            acc.update(outputs, y)
            n += b
    finally:
        model.train(was_training)
    if not n and not dist.active:
        raise ValueError("the validation data is empty; pass a dataset with at least one sample")

    def gather(t: torch.Tensor, how: str) -> torch.Tensor:
        return dist.gather_cat(t) if how == "cat" else dist.mean(t) * dist.world

    metrics, kept = acc.result(prefix, gather)
    sums = torch.stack([loss_sum, *head_sums.values(), torch.tensor(float(n), dtype=torch.float64,
                                                                    device=loss_sum.device)])  # fmt: skip
    values = gather(sums, "sum").tolist()  # the losses' one read
    total_n = values[-1]
    out = {f"{prefix}loss": values[0] / total_n if loss_fn is not None else None}
    out |= {f"{prefix}{h}_loss": v / total_n for h, v in zip(head_sums, values[1:-1])}
    return out | metrics, kept
