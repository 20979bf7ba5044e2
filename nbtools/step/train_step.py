"""One optimizer step: forward and backward over the accumulated micro-batches, clip, then step
unless anything was non-finite. One code path for every precision, and no host sync.

Gradients are cleared when a step starts, not when it ends: a step cut short between backward and
the optimizer (a KeyboardInterrupt, an exception in a batch transform) leaves nothing behind that the
next step would add in, and after a step `.grad` holds its (unscaled, clipped) gradients for
whoever wants to look at them (the gradient heatmap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from nbtools.step.distributed import SINGLE_PROCESS, Distributed
from nbtools.step.precision import Precision


@dataclass
class StepResult:
    loss: torch.Tensor  # () mean loss over the micro-batches, on the device
    bad: torch.Tensor  # () bool: the step was skipped (non-finite loss or gradient)
    grad_norm: torch.Tensor  # () total gradient norm before clipping
    group_norms: list[torch.Tensor]  # one () norm per optimizer parameter group


def as_float32(outputs):
    """Model outputs as float32 (the loss is computed outside autocast); lists/tuples for deep supervision."""
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float32(o) for o in outputs)
    return outputs.float()


def _step_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """optimizer.step(), skipped when `bad` is true: weights and optimizer state untouched.

    Fused optimizers take `found_inf` the way GradScaler hands it to them and skip on the device;
    others need the flag on the host (one sync).
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, bad.float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bad.item():
        optimizer.step()


def _group_norm(params: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return get_total_norm(grads) if grads else torch.zeros((), device=device)


def train_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    clip_norm: float | None,
    dist: Distributed = SINGLE_PROCESS,
) -> StepResult:
    """`model` is what runs forward (the DDP wrapper under torchrun); `optimizer` holds its parameters."""
    model.zero_grad(set_to_none=True)
    # A NaN batch must not poison BatchNorm's running statistics: keep them to put back on a skip.
    buffers = list(model.buffers())
    saved = [b.clone() for b in buffers]
    scaler, device = precision.scaler, precision.device
    loss_sum = torch.zeros((), device=device)
    for i, (x, y) in enumerate(micro_batches):
        with dist.no_sync(model, last=i == len(micro_batches) - 1):
            with precision.autocast():
                outputs = model(x)
            loss = loss_fn(as_float32(outputs), y) / len(micro_batches)
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    scaler.unscale_(optimizer)  # no-op unless fp16
    group_norms = [_group_norm(g["params"], device) for g in optimizer.param_groups]
    grad_norm = torch.linalg.vector_norm(torch.stack(group_norms))
    if clip_norm is not None:
        clip_grads_with_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_norm, grad_norm)
    bad = dist.any(~(torch.isfinite(grad_norm) & torch.isfinite(loss_sum)))  # a NaN on one rank skips on all
    _step_unless(optimizer, bad)
    scaler.update()  # backs the fp16 scale off after an overflow
    for b, s in zip(buffers, saved):
        b.copy_(torch.where(bad, s, b))
    dist.broadcast_buffers(model)
    return StepResult(loss_sum, bad, grad_norm, group_norms)
