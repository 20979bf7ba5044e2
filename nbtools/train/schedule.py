"""Linear warmup then cosine decay, as a torch.optim.lr_scheduler.LambdaLR stepped per optimizer step."""

from __future__ import annotations

import functools
import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_factor: float) -> float:
    """LR multiplier at optimizer step `step` (0-based): linear from ~0 to 1 over `warmup_steps`,
    then cosine from 1 to `min_factor` at `total_steps` (and held there if training runs longer)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_factor: float
) -> LambdaLR:
    # A closed form of the step (not a recursion on the current LR): a resumed run, even with a new
    # base LR, lands exactly on the curve.
    factor = functools.partial(
        warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_factor=min_factor
    )
    return LambdaLR(optimizer, factor)


def set_base_lrs(scheduler: LambdaLR, base_lrs: list[float]) -> None:
    """Give a resumed run new base LRs while keeping its place on the schedule."""
    scheduler.base_lrs = list(base_lrs)
    step = scheduler.last_epoch
    for group, base, fn in zip(scheduler.optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(step)
        group["initial_lr"] = base
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
