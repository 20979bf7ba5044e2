"""Validation: loss and metrics of a model on a loader, with one host sync at the end."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from nbtools.losses import main_output
from nbtools.train.metrics import classification_metrics
from nbtools.train.precision import Precision
from nbtools.train.step import as_float32


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, precision: Precision, loss_fn: Callable | None = None):
    """Main-output logits (float32, on the CPU), targets, and the mean loss (None without loss_fn)."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    loss_sum = torch.zeros((), device=precision.device)
    n = 0
    try:
        for x, y in loader:
            x = x.to(precision.device, non_blocking=True)
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
    if not n:
        raise ValueError("the validation data is empty; pass a dataset with at least one sample")
    logits_cpu, targets_cpu, loss = torch.cat(logits).cpu(), torch.cat(targets).cpu(), (loss_sum / n).cpu()
    return logits_cpu, targets_cpu, (float(loss) if loss_fn is not None else None)


def evaluate(model, loader, precision, loss_fn, threshold: float = 0.5, prefix: str = "val_"):
    """{prefix}loss, {prefix}acc, ..._auc etc., plus the raw logits and targets for report figures."""
    logits, targets, loss = predict(model, loader, precision, loss_fn)
    metrics = classification_metrics(targets.numpy(), logits.numpy(), threshold)
    out = {f"{prefix}loss": loss, **{f"{prefix}{k}": v for k, v in metrics.items()}}
    return out, logits, targets
