"""Focal loss (Lin et al. 2017) on logits, in log space, so it stays finite at any logit in fp32 and under AMP."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nbtools.losses._common import (
    check_reduction,
    check_targets,
    class_weights,
    float32_logits,
    is_integer,
    reduce,
)


class FocalLoss(nn.Module):
    """alpha_t * (1 - p_t)^gamma * -log(p_t), from logits.

    Binary: logits (B,) or (B, 1, ...), targets 0/1 (int, bool or float; soft labels in [0, 1] work too)
    of the same shape with or without the 1. Same-shape (B, C, ...) logits and targets are C independent
    binary problems (multi-label), as in `torchvision.ops.sigmoid_focal_loss`.
    Multiclass: logits (B, C, ...) with C > 1, targets (B, ...) int64 class indices.

    gamma: >= 0; 0 gives plain BCE-with-logits / cross-entropy.
    alpha: None (no weighting); a float in [0, 1] for binary logits (RetinaNet: alpha for positives,
    1 - alpha for negatives); or one non-negative weight per class for multiclass logits.
    reduction: "mean" (over every element, also with alpha), "sum" or "none".

    Example:
        >>> loss = FocalLoss(gamma=2.0, alpha=0.25)
        >>> loss(torch.randn(8, 1), torch.randint(0, 2, (8,))).shape
        torch.Size([])
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"FocalLoss: gamma must be a finite number >= 0 (2.0 is usual), got {gamma!r}")
        self.gamma = float(gamma)
        self.reduction = check_reduction("FocalLoss", reduction)
        if alpha is None:
            table = None
        elif isinstance(alpha, (int, float)):
            if not 0 <= alpha <= 1:
                raise ValueError(
                    f"FocalLoss: a scalar alpha is the positives' weight and must be in [0, 1] "
                    f"(0.25 in RetinaNet), got {alpha!r}; pass None for no weighting"
                )
            table = torch.tensor(float(alpha))
        else:
            table = class_weights("FocalLoss", "alpha", alpha)
        # 0-d: binary alpha; 1-d: per-class weights. Non-persistent: it is rebuilt from the arguments.
        self.register_buffer("alpha", table, persistent=False)

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else self.alpha.tolist()
        return f"gamma={self.gamma}, alpha={alpha}, reduction={self.reduction!r}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float32_logits("FocalLoss", logits)
        t = check_targets("FocalLoss", targets)
        if z.dim() >= 2 and z.shape[1] > 1 and z.shape != t.shape:
            loss = self._multiclass(z, t)
        else:
            loss = self._binary(*_binary_pair(z, t))
        return reduce(loss, self.reduction)

    def _binary(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")  # -log p_t
        if self.gamma == 0:  # BCE: the factor (1 - p_t)^0 is 1
            return ce if self.alpha is None else self._binary_weighted(ce, z, t)
        # 1 - p_t = t (1 - p) + (1 - t) p, summed in log space: finite at any logit, exact for soft labels.
        log_1m_pt = torch.logaddexp(torch.log(t) + F.logsigmoid(-z), torch.log1p(-t) + F.logsigmoid(z))
        loss = torch.exp(self.gamma * log_1m_pt) * ce
        return loss if self.alpha is None else self._binary_weighted(loss, z, t)

    def _binary_weighted(self, loss: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.alpha.dim() != 0:
            raise ValueError(
                f"FocalLoss: per-class alpha (length {self.alpha.numel()}) needs multiclass logits "
                f"(B, C) with int64 targets (B,), got binary logits {tuple(z.shape)}; "
                f"pass a scalar alpha in [0, 1] for binary logits"
            )
        a = self.alpha.to(z.device)
        return (a * t + (1 - a) * (1 - t)) * loss

    def _multiclass(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        expected = (z.shape[0], *z.shape[2:])
        if t.shape != expected or not is_integer(t):
            raise ValueError(
                f"FocalLoss: multiclass logits {tuple(z.shape)} need int64 class indices of shape "
                f"{tuple(expected)}, got targets {tuple(t.shape)} {t.dtype}"
            )
        t = t.long().unsqueeze(1)
        logp = F.log_softmax(z, dim=1)
        log_pt = logp.gather(1, t)
        if self.gamma == 0:  # cross-entropy: the factor (1 - p_t)^0 is 1, no need to compute it
            loss = -log_pt.squeeze(1)
            return loss if self.alpha is None else self._class_weighted(loss, z, t)
        # log(1 - p_t) as the logsumexp of the other classes: log1p(-exp(log_pt)) has an infinite
        # gradient where p_t rounds to 1, and 0 * inf is NaN.
        classes = torch.arange(z.shape[1], device=z.device).view(1, -1, *([1] * (z.dim() - 2)))
        log_1m_pt = torch.logsumexp(logp.masked_fill(classes == t, float("-inf")), dim=1, keepdim=True)
        loss = (torch.exp(self.gamma * log_1m_pt) * -log_pt).squeeze(1)
        return loss if self.alpha is None else self._class_weighted(loss, z, t)

    def _class_weighted(self, loss: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.alpha.dim() == 0 or self.alpha.numel() != z.shape[1]:
            got = "a scalar" if self.alpha.dim() == 0 else f"{self.alpha.numel()} values"
            raise ValueError(
                f"FocalLoss: multiclass logits {tuple(z.shape)} need alpha with one weight per class "
                f"({z.shape[1]} values), got {got}"
            )
        return self.alpha.to(z.device)[t.squeeze(1)] * loss


def _binary_pair(z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary logits and float32 targets of one shape, dropping a size-1 channel from either."""
    if z.shape != t.shape:
        if z.dim() == t.dim() + 1 and z.dim() >= 2 and z.shape[1] == 1 and z.squeeze(1).shape == t.shape:
            z = z.squeeze(1)
        elif t.dim() == z.dim() + 1 and t.dim() >= 2 and t.shape[1] == 1 and t.squeeze(1).shape == z.shape:
            t = t.squeeze(1)
        else:
            raise ValueError(
                f"FocalLoss: logits {tuple(z.shape)} and targets {tuple(t.shape)} do not fit; expected "
                f"binary logits (B,) or (B, 1, ...) with 0/1 targets of the same shape (with or without the 1), "
                f"or multiclass logits (B, C, ...) with int64 class indices (B, ...)"
            )
    return z, t.float()
