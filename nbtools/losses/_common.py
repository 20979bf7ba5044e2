"""Checks and reductions shared by the losses (private)."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(owner: str, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    return reduction


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def float32_logits(owner: str, logits) -> torch.Tensor:
    """The logits as float32 (also under autocast), or a TypeError/ValueError that says what to pass."""
    if isinstance(logits, (list, tuple)):
        raise TypeError(
            f"{owner} got a {type(logits).__name__} of {len(logits)} outputs (deep supervision); "
            f"wrap the loss in DeepSupervisionLoss(base, weights) or pass main_output(outputs)"
        )
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{owner}: logits must be a tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{owner}: logits must be floating point (raw model scores), got {logits.dtype}")
    return logits.float()


def check_targets(owner: str, targets) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{owner}: targets must be a tensor, got {type(targets).__name__}")
    return targets


def is_integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def class_weights(owner: str, name: str, values) -> torch.Tensor:
    """A 1-D float32 tensor of finite, non-negative per-class values, or a ValueError naming the index."""
    w = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(
            f"{owner}: {name} must be a non-empty 1-D sequence, one value per class, got shape {tuple(w.shape)}"
        )
    for i, v in enumerate(w.tolist()):
        if not (v >= 0 and v != float("inf")):
            raise ValueError(f"{owner}: {name}[{i}] is {v}; every value must be finite and >= 0")
    return w
