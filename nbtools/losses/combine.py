"""Putting losses together: the main output of a deep-supervision model, weighted sums, deep supervision."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def main_output(outputs) -> torch.Tensor:
    """The main prediction: the tensor itself, or the first of a deep-supervision list/tuple (seed 001)."""
    while isinstance(outputs, (list, tuple)):
        if not outputs:
            raise ValueError(
                "model returned an empty list/tuple of outputs; expected a tensor or [main, aux...]"
            )
        outputs = outputs[0]
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(
            f"model output must be a tensor or a list/tuple of tensors, got {type(outputs).__name__}"
        )
    return outputs


def _weight(owner: str, name: str, w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"{owner}: the weight of {name} must be a finite number, got {w!r}")
    return float(w)


class ComboLoss(nn.Module):
    """A weighted sum of named losses: sum(weight * loss(logits, targets)).

    parts: {"name": (loss_module, weight)}. `parts(logits, targets)` gives each named loss unweighted
    (for logging); the forward adds them up with their weights.

    Example:
        >>> loss = ComboLoss({"focal": (FocalLoss(gamma=2.0), 1.0), "dice": (DiceLoss(), 0.5)})
        >>> logits, y = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> sorted(loss.parts(logits, y))
        ['dice', 'focal']
    """

    def __init__(self, parts: dict[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        if not isinstance(parts, dict) or not parts:
            raise ValueError(
                f"ComboLoss: parts must be a non-empty dict {{name: (loss, weight)}}, got {parts!r}"
            )
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, part in parts.items():
            if not (isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], nn.Module)):
                raise ValueError(
                    f"ComboLoss: parts[{name!r}] must be a (loss module, weight) tuple, got {part!r}"
                )
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"ComboLoss: part names must be non-empty strings without '.', got {name!r}")
            self.terms[name] = part[0]
            self.weights[name] = _weight("ComboLoss", f"part {name!r}", part[1])

    def extra_repr(self) -> str:
        return f"weights={self.weights}"

    def parts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each named loss on its own, unweighted."""
        return {name: term(logits, targets) for name, term in self.terms.items()}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = self.parts(logits, targets)
        return sum(self.weights[name] * value for name, value in terms.items())


class DeepSupervisionLoss(nn.Module):
    """sum_i weights[i] * base(outputs[i], target_i) for outputs [main, aux1, ...] (list or tuple).

    Dense targets (segmentation: a class map (B, ...) or one-hot/soft (B, C, ...)) are resized to each
    output's spatial size by nearest-neighbour; classification targets (B,) go to every output as they are.
    A bare tensor (a model that drops its auxiliary heads in eval mode) is the main output alone:
    weights[0] * base(outputs, targets).

    Example:
        >>> loss = DeepSupervisionLoss(DiceLoss(), weights=[1.0, 0.5])
        >>> outs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
        >>> loss(outs, torch.randint(0, 3, (2, 32, 32))).shape
        torch.Size([])
    """

    def __init__(self, base: Callable, weights: Sequence[float]) -> None:
        super().__init__()
        if not callable(base):
            raise TypeError(f"DeepSupervisionLoss: base must be a loss (callable), got {type(base).__name__}")
        weights = list(weights)
        if not weights:
            raise ValueError("DeepSupervisionLoss: weights must have one number per output, got none")
        self.base = base
        self.weights = tuple(_weight("DeepSupervisionLoss", f"output {i}", w) for i, w in enumerate(weights))

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}"

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.weights[0] * self.base(outputs, targets)
        if not isinstance(outputs, (list, tuple)):
            raise TypeError(
                f"DeepSupervisionLoss: outputs must be a list/tuple [main, aux1, ...] or a tensor, "
                f"got {type(outputs).__name__}"
            )
        if len(outputs) != len(self.weights):
            raise ValueError(
                f"DeepSupervisionLoss: the model gave {len(outputs)} outputs but there are "
                f"{len(self.weights)} weights; give one weight per output (main first)"
            )
        return sum(w * self.base(out, resize_target(targets, out)) for w, out in zip(self.weights, outputs))


def resize_target(targets: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """targets resized by nearest-neighbour to output's spatial size (dims 2 onwards), if they are dense.

    A class map (B, ...) has one dim fewer than the output, one-hot/soft targets (B, C, ...) as many;
    anything else (classification, or no spatial dims) is returned as it is.
    """
    if output.dim() < 3:
        return targets
    size = tuple(output.shape[2:])
    if targets.dim() == output.dim() - 1:
        channel_first = targets.unsqueeze(1)
    elif targets.dim() == output.dim():
        channel_first = targets
    else:
        return targets
    if tuple(channel_first.shape[2:]) == size:
        return targets
    # "nearest-exact" takes the source pixel whose centre is nearest; "nearest" shifts by half a pixel.
    resized = F.interpolate(channel_first.float(), size=size, mode="nearest-exact").to(targets.dtype)
    return resized.squeeze(1) if targets.dim() == output.dim() - 1 else resized
