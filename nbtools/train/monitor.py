"""The monitored metric (cfg.monitor) when it has no value: AUC on a validation set with one class,
a NaN validation loss. Such an epoch is no improvement (nbtools.train.early_stop); these functions
say why, before training when the validation labels tell, and at the epoch where it happens."""

from __future__ import annotations

import math

from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.data.samples import labels_of
from nbtools.runs import Finding
from nbtools.runs.classes import class_name

CODE = "monitor-undefined"


def _fix(cfg: TrainConfig) -> str:
    other = "val_loss" if cfg.monitor != "val_loss" else "val_acc"
    return (
        "make the validation set hold every class (nbt.data.kfold and holdout_split stratify by label), "
        f"or monitor another metric (monitor={other!r}); until then best.pt and early stopping never move on "
        f"{cfg.monitor}"
    )


def preflight_finding(
    cfg: TrainConfig, val_data: Dataset, classes: list[str] | None = None
) -> Finding | None:
    """Before training: a Finding when the validation labels cannot define cfg.monitor (AUC with one
    class), else None (also when the dataset does not declare its labels). classes: the run's class
    names (nbtools.runs.classes), for the message."""
    if cfg.monitor != "val_auc":
        return None
    labels = labels_of(val_data)
    if labels is None or len(labels) == 0:
        return None
    found = sorted({int(v) for v in labels.unique().tolist()})
    if len(found) >= 2:
        return None
    return Finding(
        CODE,
        f"monitor='val_auc' is undefined on this validation set: its {len(labels)} samples are all "
        f"{class_name(classes, found[0])}, and AUC needs both classes; every epoch will count as no improvement",
        _fix(cfg),
    )


def undefined(value) -> bool:
    return value is None or not math.isfinite(value)


def epoch_finding(cfg: TrainConfig, record: dict) -> Finding | None:
    """At an epoch end: a Finding when record[cfg.monitor] is None or NaN, saying why, else None."""
    value = record.get(cfg.monitor)
    if not undefined(value):
        return None
    if value is None and cfg.monitor == "val_auc":
        why = "the validation targets hold one class only (AUC needs both)"
    elif value is None:
        why = "the metric could not be computed on the validation set"
    else:
        why = f"it is {value} (a non-finite validation loss or output)"
    return Finding(
        CODE,
        f"{cfg.monitor} is undefined at epoch {record['epoch']}: {why}; the epoch counts as no improvement",
        _fix(cfg),
        epoch=record["epoch"],
    )


def best_text(value: float | None, epoch: int) -> str:
    return f"best {value:.4g} at epoch {epoch}" if value is not None else "never defined"
