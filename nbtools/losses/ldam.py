"""LDAM loss (Cao et al. 2019): larger margins for rarer classes, for long-tailed classification."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nbtools.losses._common import check_reduction, check_targets, class_weights, float32_logits, is_integer


class LDAMLoss(nn.Module):
    """Cross-entropy of scale * (logits - margin on the true class), margin_j ∝ n_j^(-1/4).

    class_counts: training examples per class (all > 0); the rarest class gets max_margin.
    scale: multiplies the logits after the margin (s in the paper; 30 there, for normalized features).
    weight: optional per-class weights, as `F.cross_entropy(weight=...)` takes them (with "mean", the
    weighted sum is divided by the summed weights of the targets), e.g. for deferred re-weighting.
    logits: (B, C) float, targets: (B,) int64, C == len(class_counts).

    Example:
        >>> loss = LDAMLoss(class_counts=[900, 90, 10], max_margin=0.5, scale=30.0)
        >>> loss(torch.randn(8, 3), torch.randint(0, 3, (8,))).shape
        torch.Size([])
    """

    def __init__(
        self,
        class_counts: Sequence[float] | torch.Tensor,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Sequence[float] | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
        if counts.dim() != 1 or counts.numel() < 2:
            raise ValueError(
                f"LDAMLoss: class_counts must list the examples of each of at least 2 classes, "
                f"got shape {tuple(counts.shape)}"
            )
        for i, n in enumerate(counts.tolist()):
            if not (0 < n < math.inf):
                raise ValueError(
                    f"LDAMLoss: class_counts[{i}] is {n}; every class needs a finite count > 0 "
                    f"(drop classes without training examples)"
                )
        for name, v in (("max_margin", max_margin), ("scale", scale)):
            if not (isinstance(v, (int, float)) and 0 < v < math.inf):
                raise ValueError(f"LDAMLoss: {name} must be a finite number > 0, got {v!r}")
        self.max_margin, self.scale = float(max_margin), float(scale)
        self.reduction = check_reduction("LDAMLoss", reduction)
        margins = counts.pow(-0.25)
        self.register_buffer("margins", (margins * (max_margin / margins.max())).float(), persistent=False)
        if weight is not None:
            weight = class_weights("LDAMLoss", "weight", weight)
            if weight.numel() != counts.numel():
                raise ValueError(
                    f"LDAMLoss: weight has {weight.numel()} values but class_counts has {counts.numel()}; "
                    f"give one weight per class"
                )
        self.register_buffer("weight", weight, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"classes={self.margins.numel()}, max_margin={self.max_margin}, scale={self.scale}, "
            f"weighted={self.weight is not None}, reduction={self.reduction!r}"
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float32_logits("LDAMLoss", logits)
        t = check_targets("LDAMLoss", targets)
        n = self.margins.numel()
        if z.dim() != 2 or z.shape[1] != n or t.shape != z.shape[:1] or not is_integer(t):
            raise ValueError(
                f"LDAMLoss: expected logits (B, {n}) for the {n} classes in class_counts and int64 targets "
                f"(B,), got logits {tuple(z.shape)} and targets {tuple(t.shape)} {t.dtype}"
            )
        t = t.long()
        margins = self.margins.to(z.device)
        shift = torch.zeros_like(z).scatter(1, t.unsqueeze(1), margins[t].unsqueeze(1))
        weight = None if self.weight is None else self.weight.to(z.device)
        # cross_entropy works from log_softmax, so scale * logits of any size stays finite.
        return F.cross_entropy(self.scale * (z - shift), t, weight=weight, reduction=self.reduction)
