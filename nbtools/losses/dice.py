"""Soft Dice loss on logits, and its log-cosh form (Jadon 2020) with a log-cosh that cannot overflow."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nbtools.losses._common import check_reduction, check_targets, float32_logits, is_integer, reduce

LOG2 = math.log(2.0)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """log(cosh(x)) in float32, finite for every finite x (cosh itself overflows past |x| ~ 89).

    log cosh is even, so with a = |x|: log((e^a + e^-a) / 2) = a + log(1 + e^-2a) - log 2.

    Example:
        >>> log_cosh(torch.tensor([-1e4, 0.0, 1e4]))
        tensor([9999.3066,    0.0000, 9999.3066])
    """
    a = x.float().abs()
    return a + F.softplus(-2.0 * a) - LOG2


class DiceLoss(nn.Module):
    """1 - soft Dice, per sample and class, from logits.

    logits: (B, C, ...) float; sigmoid when C == 1 (or logits (B,), read as (B, 1)), softmax over C otherwise.
    targets: an integer class map (B, ...) (0/1 when C == 1), or one-hot / soft targets shaped like logits.
    Dice for each (sample, class) sums over the spatial dims:
    (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth), smooth > 0 keeps empty masks finite.
    include_background: False leaves class 0 out of the Dice (C > 1; the losses are then (B, C - 1)), as
    nnU-Net does: the background's Dice is near 1 from the start and dilutes the foreground's. The softmax
    still runs over every class. With C == 1 the one channel is the foreground, whatever this says.
    reduction: "mean" or "sum" over the (B, C) losses, or "none" to get them.

    Example:
        >>> loss = DiceLoss()
        >>> loss(torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))).shape
        torch.Size([])
    """

    def __init__(self, smooth: float = 1.0, reduction: str = "mean", include_background: bool = True) -> None:
        super().__init__()
        if not (isinstance(smooth, (int, float)) and 0 < smooth < math.inf):
            raise ValueError(
                f"{type(self).__name__}: smooth must be a finite number > 0 (1.0 is usual; it keeps "
                f"the loss finite on empty masks), got {smooth!r}"
            )
        self.smooth = float(smooth)
        self.reduction = check_reduction(type(self).__name__, reduction)
        if not isinstance(include_background, bool):
            raise ValueError(
                f"{type(self).__name__}: include_background must be True or False, got {include_background!r}"
            )
        self.include_background = include_background

    def extra_repr(self) -> str:
        background = self.include_background
        return f"smooth={self.smooth}, reduction={self.reduction!r}, include_background={background}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return reduce(self._dice_loss(logits, targets), self.reduction)

    def _dice_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The (B, C) Dice losses."""
        name = type(self).__name__
        z = float32_logits(name, logits)
        t = check_targets(name, targets)
        if z.dim() == 1:
            z = z.unsqueeze(1)
        n_classes = z.shape[1]
        if t.shape == z.shape:
            onehot = t.float()
        elif t.shape == (z.shape[0], *z.shape[2:]) and (n_classes == 1 or is_integer(t)):
            if n_classes == 1:
                onehot = t.float().unsqueeze(1)
            else:
                classes = torch.arange(n_classes, device=z.device).view(1, -1, *([1] * (z.dim() - 2)))
                onehot = (t.unsqueeze(1) == classes).float()
        else:
            raise ValueError(
                f"{name}: logits {tuple(logits.shape)} and targets {tuple(t.shape)} do not fit; expected "
                f"an integer class map {(z.shape[0], *z.shape[2:])} or one-hot/soft targets {tuple(z.shape)}"
            )
        probs = torch.sigmoid(z) if n_classes == 1 else torch.softmax(z, dim=1)
        if n_classes > 1 and not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = tuple(range(2, z.dim()))
        overlap = (probs * onehot).sum(dims)
        total = probs.sum(dims) + onehot.sum(dims)
        return 1 - (2 * overlap + self.smooth) / (total + self.smooth)


class LogCoshDiceLoss(DiceLoss):
    """log(cosh(Dice loss)) (Jadon 2020), with the overflow-free `log_cosh`; same arguments as DiceLoss.

    The log-cosh is taken of the reduced Dice loss (reduction="none": of each (B, C) loss).

    Example:
        >>> loss = LogCoshDiceLoss(smooth=1.0)
        >>> loss(torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4, 8, 8))).shape
        torch.Size([])
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return log_cosh(super().forward(logits, targets))
