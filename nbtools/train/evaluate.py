"""Validation: loss and metrics of a model on a loader, with one host sync at the end."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from nbtools.losses import main_output
from nbtools.runs import classification_metrics
from nbtools.step import SINGLE_PROCESS, Distributed, Precision, as_float32
from nbtools.train.accel import as_input


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
    in the model's channels-last format (TrainConfig.channels_last)."""
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


def evaluate(
    model,
    loader,
    precision,
    loss_fn,
    threshold: float = 0.5,
    prefix: str = "val_",
    dist=SINGLE_PROCESS,
    channels_last: bool = False,
):
    """{prefix}loss, {prefix}acc, ..._auc etc., plus the raw logits and targets for report figures."""
    logits, targets, loss = predict(model, loader, precision, loss_fn, dist, channels_last)
    metrics = classification_metrics(targets.numpy(), logits.numpy(), threshold)
    out = {f"{prefix}loss": loss, **{f"{prefix}{k}": v for k, v in metrics.items()}}
    return out, logits, targets
