"""EMA of the weights with torch.optim.swa_utils' AveragedModel, with a warm-up, updated without a
host sync and not at all on a skipped step.

Warm-up (as timm's ModelEmaV3 and TensorFlow's ExponentialMovingAverage(num_updates) do): the n-th
update (n = 0, 1, ...) uses decay_n = min(decay, (1 + n) / (10 + n)), so over a short run the EMA
follows the trained weights instead of staying near the initial ones (with decay=0.999 and no warm-up,
300 steps leave 74 % of the EMA at the initial weights).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    return (9 / (n + 10)).clamp_(min=1 - decay)


@dataclass
class EmaPairs:
    """The EMA's tensors and the model's they follow, paired once (`ema_pairs`) rather than by walking
    both models at every step: floating-point ones by dtype (averaged), the others (BatchNorm's
    num_batches_tracked) copied, as a running count cannot be averaged."""

    floats: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]]  # dtype: (ema's, model's)
    others: tuple[list[torch.Tensor], list[torch.Tensor]]  # (ema's, model's)


def ema_pairs(ema: AveragedModel, model: nn.Module) -> EmaPairs:
    """Valid while the model keeps its parameter and buffer objects (fit makes them once per epoch)."""
    floats: dict[torch.dtype, tuple[list, list]] = {}
    others: tuple[list, list] = ([], [])
    for a, m in zip(
        [*ema.module.parameters(), *ema.module.buffers()],
        [*model.parameters(), *model.buffers()],
        strict=True,
    ):
        avg, cur = floats.setdefault(a.dtype, ([], [])) if a.is_floating_point() else others
        avg.append(a)
        cur.append(m)
    return EmaPairs(floats, others)


@torch.no_grad()
def update_ema(
    ema: AveragedModel, model: nn.Module, skipped: torch.Tensor | None = None, pairs: EmaPairs | None = None
) -> None:
    """One EMA step: ema += (1 - decay_n) * (model - ema), with weight 0 when `skipped` (a () bool
    tensor on the device, train_step's `bad`) is true, so a skipped step leaves the EMA as it was
    and does not count as an update. Everything stays on the device (no host sync: the weight is a
    tensor, so the update is foreach sub / mul by a tensor / add, not a lerp by a Python number), in
    a fixed number of multi-tensor ops however many layers the model has. pairs: `ema_pairs(ema,
    model)`, made once by the caller (None: made here).

    `AveragedModel.update_parameters` asks `n_averaged == 0` on the host at every call (two syncs per
    step on a GPU); our EMA starts as a copy, so we update directly. Integer buffers are copied (a
    skipped step already put the model's back: train_step). A skipped step whose model weights are
    themselves non-finite still makes the EMA non-finite (0 * NaN is NaN); fit never writes such a
    state as a checkpoint (nbtools.train.saving).
    """
    pairs = ema_pairs(ema, model) if pairs is None else pairs
    weight = ema_weight(ema.decay, ema.n_averaged)
    if skipped is not None:
        weight.masked_fill_(skipped, 0.0)
    for dtype, (avg, cur) in pairs.floats.items():
        diffs = torch._foreach_sub(cur, avg)
        torch._foreach_mul_(diffs, weight if dtype == weight.dtype else weight.to(dtype))
        torch._foreach_add_(avg, diffs)
    if pairs.others[0]:
        torch._foreach_copy_(*pairs.others)
    ema.n_averaged += 1 if skipped is None else ~skipped
