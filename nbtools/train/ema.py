"""EMA of the weights with torch.optim.swa_utils' AveragedModel, with a warm-up, updated without a
host sync and not at all on a skipped step.

Warm-up (as timm's ModelEmaV3 and TensorFlow's ExponentialMovingAverage(num_updates) do): the n-th
update (n = 0, 1, ...) uses decay_n = min(decay, (1 + n) / (10 + n)), so over a short run the EMA
follows the trained weights instead of staying near the initial ones (with decay=0.999 and no warm-up,
300 steps leave 74 % of the EMA at the initial weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel that starts as a copy of `model` and averages parameters and buffers.
    Its `n_averaged` buffer counts the updates taken (skipped steps excluded) and sets the warm-up."""
    ema = AveragedModel(model, use_buffers=True)
    ema.decay = decay
    ema.requires_grad_(False)
    return ema


def ema_weight(decay: float, n: torch.Tensor) -> torch.Tensor:
    """1 - decay_n for update number `n` (0-based, a tensor): 1 - min(decay, (1 + n) / (10 + n)),
    that is max(1 - decay, 9 / (10 + n)), computed on n's device."""
    warm = 9 / (n + 10)
    return torch.where(warm > 1 - decay, warm, 1 - decay)


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module, skipped: torch.Tensor | None = None) -> None:
    """One EMA step: ema += (1 - decay_n) * (model - ema), with weight 0 when `skipped` (a () bool
    tensor on the device, train_step's `bad`) is true, so a skipped step leaves the EMA as it was
    and does not count as an update. Everything stays on the device (no host sync: the weight is a
    tensor, so the update is foreach sub / mul by a tensor / add, not a lerp by a Python number).

    `AveragedModel.update_parameters` asks `n_averaged == 0` on the host at every call (two syncs per
    step on a GPU); our EMA starts as a copy, so we update directly. Integer buffers (BatchNorm's
    num_batches_tracked) are copied, as a running count cannot be averaged. A skipped step whose
    model weights are themselves non-finite still makes the EMA non-finite (0 * NaN is NaN); fit
    never writes such a state as a checkpoint (nbtools.train.saving).
    """
    weight = ema_weight(ema.decay, ema.n_averaged)
    take = None if skipped is None else ~skipped
    if take is not None:
        weight = weight * take
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
            a.copy_(m)  # a skipped step already put the model's back (train_step)
    for dtype in {a.dtype for a in avg}:  # one weight tensor per dtype
        pairs = [(a, c) for a, c in zip(avg, cur) if a.dtype == dtype]
        diffs = torch._foreach_sub([c for _, c in pairs], [a for a, _ in pairs])
        torch._foreach_mul_(diffs, weight.to(dtype))
        torch._foreach_add_([a for a, _ in pairs], diffs)
    ema.n_averaged += 1 if take is None else take
