"""EMA of the weights with torch.optim.swa_utils, updated without a host sync."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel that starts as a copy of `model` and averages parameters and buffers."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module) -> None:
    """One EMA step with swa_utils' EMA function.

    `AveragedModel.update_parameters` asks `n_averaged == 0` on the host at every call (two syncs
    per step on a GPU); our EMA starts as a copy, so we apply the same averaging function directly.
    Integer buffers (BatchNorm's num_batches_tracked) are copied, as a running count cannot be averaged.
    """
    avg, cur = [], []
    for a, m in zip(
        [*ema.module.parameters(), *ema.module.buffers()],
        [*model.parameters(), *model.buffers()],
        strict=True,
    ):
        if a.is_floating_point():
            avg.append(a)
            cur.append(m.detach())
        else:
            a.copy_(m)
    if avg:
        ema.multi_avg_fn(avg, cur, None)
    ema.n_averaged += 1
