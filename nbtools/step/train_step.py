"""One optimizer step: forward and backward over the accumulated micro-batches, clip, then step
unless anything was non-finite. One code path for every precision, and no host sync.

The optimizer's gradients are cleared when a step starts, not when it ends: a step cut short between backward and
the optimizer (a KeyboardInterrupt, an exception in a batch transform) leaves nothing behind that the
next step would add in, and after a step `.grad` holds its (unscaled, clipped) gradients for
whoever wants to look at them (the gradient heatmap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import clip_grads_with_norm_

from nbtools.step.buffers import BufferGuard
from nbtools.step.distributed import SINGLE_PROCESS, Distributed
from nbtools.step.precision import Precision


@dataclass
class StepResult:
    loss: torch.Tensor  # () mean loss over the micro-batches, on the device
    bad: torch.Tensor  # () bool: the step was skipped (non-finite loss or gradient)
    grad_norm: torch.Tensor  # () total gradient norm before clipping
    group_norms: list[torch.Tensor]  # one () norm per optimizer parameter group


def as_float32(outputs):
    """Model outputs as float32 (the loss is computed outside autocast); lists/tuples for deep supervision
    or heads of different roles, dicts for named heads (MultiTaskLoss)."""
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float32(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: as_float32(v) for k, v in outputs.items()}
    return outputs.float()


def _step_unless(optimizer: torch.optim.Optimizer, skipped: torch.Tensor) -> None:
    """optimizer.step(), skipped when `skipped` (a () float flag) is 1.0: weights and optimizer state
    untouched.

    Fused optimizers take it as `found_inf`, the way GradScaler hands it to them, and skip on the
    device; others need the flag on the host (one sync).
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, skipped
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not skipped.item():
        optimizer.step()


def _grad_norms(optimizer: torch.optim.Optimizer, device: torch.device):
    """(total gradient norm, [norm per parameter group]): one foreach norm over all the gradients, as
    clip_grad_norm_ computes it, and each group's from its part of it; a single group's norm is the
    total (no extra op)."""
    groups = [[p.grad for p in g["params"] if p.grad is not None] for g in optimizer.param_groups]
    grads = [g for group in groups for g in group]
    norms = torch.stack(torch._foreach_norm(grads)) if grads else torch.zeros(0, device=device)
    total = torch.linalg.vector_norm(norms)
    if len(groups) == 1:
        return total, [total]
    return total, [torch.linalg.vector_norm(n) for n in norms.split([len(g) for g in groups])]


def _nonfinite(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """() bool: `a` or `b` is inf or NaN. a + 0 * b is a, or NaN where b is not finite; x - x is 0 for
    every finite x and NaN otherwise, and NaN is the one value not equal to itself. Nothing can
    overflow, and it costs three ops between tensors (isfinite alone costs four; an op with a Python
    number, such as x * 0, costs twice what one between tensors does)."""
    total = a.add(b, alpha=0)
    zero_or_nan = total.sub(total)
    return zero_or_nan.ne(zero_or_nan)


def train_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    clip_norm: float | None,
    dist: Distributed = SINGLE_PROCESS,
    buffers: BufferGuard | None = None,
) -> StepResult:
    """`model` is what runs forward (the DDP wrapper under torchrun); `optimizer` holds its parameters.
    buffers: the guard of the model's buffers, made once by the caller (`fit` makes one per run); None
    guards copies of them, made at each call (see nbtools.step.buffers)."""
    for group in optimizer.param_groups:  # the step's gradients only (Module.zero_grad walks every module)
        for p in group["params"]:
            p.grad = None
    # A NaN batch must not poison BatchNorm's running statistics: keep them to put back on a skip.
    buffers = BufferGuard(model, flatten=False) if buffers is None else buffers
    saved = buffers.snapshot()
    scaler, n, autocast = precision.scaler, len(micro_batches), precision.autocast()
    loss_sum = None
    for i, (x, y) in enumerate(micro_batches):
        with dist.no_sync(model, last=i == n - 1):
            with autocast:
                outputs = model(x)
            loss = loss_fn(as_float32(outputs), y)
            loss = loss / n if n > 1 else loss  # x / 1 is x: no op for a single micro-batch
            scaler.scale(loss).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    scaler.unscale_(optimizer)  # no-op unless fp16
    grad_norm, group_norms = _grad_norms(optimizer, precision.device)
    if clip_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip_grads_with_norm_(params, clip_norm, grad_norm)  # clip_grad_norm_ with the norm above
    bad = _nonfinite(grad_norm, loss_sum)  # for the selections below and after (torch.where takes a bool)
    skipped = bad.float()  # what fused optimizers take as found_inf, and what torchrun's ranks reduce
    if dist.active:  # a NaN on one rank skips on all
        bad = dist.any(skipped).bool()
    _step_unless(optimizer, skipped)
    scaler.update()  # backs the fp16 scale off after an overflow
    buffers.restore_if(bad, saved)
    dist.broadcast_buffers(buffers)
    return StepResult(loss_sum, bad, grad_norm, group_norms)
