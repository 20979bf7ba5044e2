"""Putting losses together: the main output of a deep-supervision model, weighted sums, deep supervision
(with nnU-Net's and MONAI's weights by name).

Both combinations give their terms with the total from one computation (`with_terms`), unweighted and
on the device (no host sync), for telemetry; forward returns the total alone and keeps nothing on self."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEEP_SUPERVISION_PRESETS = ("nnunet", "exp")


def main_output(outputs) -> torch.Tensor:
    """The main prediction: the tensor itself, or the first of a deep-supervision list/tuple."""
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
    (for logging); the forward adds them up with their weights; `with_terms(logits, targets)` gives
    (that sum, the parts) from one computation.

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

    def with_terms(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the weighted sum, {name: unweighted loss}), the parts still attached to the graph."""
        terms = self.parts(logits, targets)
        return sum(self.weights[name] * value for name, value in terms.items()), terms

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.with_terms(logits, targets)[0]


def deep_supervision_weights(n_outputs: int, preset: str = "nnunet") -> tuple[float, ...]:
    """The weights of outputs [main, aux1, ...] (aux i at 1/2^i resolution) under a named preset.

    "nnunet": 1/2^i, the lowest-resolution output's weight 0, normalised to sum 1 (nnU-Net v2's
        trainer): 4 outputs -> (0.571, 0.286, 0.143, 0.0); a single output -> (1.0,).
    "exp": MONAI's DeepSupervisionLoss(weight_mode="exp"): max(1/2^i, 1/16), not normalised:
        4 outputs -> (1.0, 0.5, 0.25, 0.125).

    >>> deep_supervision_weights(3, "nnunet")
    (0.6666666666666666, 0.3333333333333333, 0.0)
    """
    if preset not in DEEP_SUPERVISION_PRESETS:
        raise ValueError(
            f"deep supervision weights preset must be one of {DEEP_SUPERVISION_PRESETS}, got {preset!r}"
        )
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        raise ValueError(f"n_outputs must be an int >= 1 (main + aux outputs), got {n_outputs!r}")
    if preset == "exp":
        return tuple(max(0.5**i, 0.0625) for i in range(n_outputs))
    if n_outputs == 1:
        return (1.0,)
    raw = [0.5**i for i in range(n_outputs - 1)] + [0.0]
    return tuple(w / sum(raw) for w in raw)


class DeepSupervisionLoss(nn.Module):
    """sum_i weights[i] * base(outputs[i], target_i) for outputs [main, aux1, ...] (list or tuple).

    weights: one number per output, or a preset name resolved for the number of outputs each call
    (`deep_supervision_weights`): "nnunet" (1/2^i, the lowest resolution 0, sum 1) or "exp" (MONAI).
    Dense targets (segmentation: a class map (B, ...) or one-hot/soft (B, C, ...)) are resized to each
    output's spatial size by nearest-neighbour, as nnU-Net does: the loss of an aux output is computed
    at its own resolution (cheap), against labels that stay labels (upsampling the output instead would
    cost a full-resolution loss per output and blur what the coarse head is asked to get right).
    Classification targets (B,) go to every output as they are.
    A bare tensor (a model that drops its auxiliary heads in eval mode) is the main output alone:
    weights[0] * base(outputs, targets), 1 * base under a preset.

    `with_terms(outputs, targets)` gives (the total, {"main": loss, "aux1": loss, ...}) from one
    computation, the terms unweighted and attached, plus "main.dice", "main.ce", ... when the base has
    terms of its own (ComboLoss, DiceCELoss): telemetry detaches and accumulates them on the device.

    Example:
        >>> loss = DeepSupervisionLoss(DiceLoss(), weights=[1.0, 0.5])
        >>> outs = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
        >>> loss(outs, torch.randint(0, 3, (2, 32, 32))).shape
        torch.Size([])
    """

    def __init__(self, base: Callable, weights: Sequence[float] | str = "nnunet") -> None:
        super().__init__()
        if not callable(base):
            raise TypeError(f"DeepSupervisionLoss: base must be a loss (callable), got {type(base).__name__}")
        self.base = base
        self.preset = weights if isinstance(weights, str) else None
        if self.preset is not None:
            deep_supervision_weights(1, self.preset)  # refuses an unknown name now, not at the first step
            self.weights = None
        else:
            weights = list(weights)
            if not weights:
                raise ValueError("DeepSupervisionLoss: weights must have one number per output, got none")
            self.weights = tuple(
                _weight("DeepSupervisionLoss", f"output {i}", w) for i, w in enumerate(weights)
            )

    def extra_repr(self) -> str:
        return f"weights={self.preset!r}" if self.preset else f"weights={list(self.weights)}"

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        return self.with_terms(outputs, targets)[0]

    def with_terms(self, outputs, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum_i weights[i] * base(outputs[i], target_i), {"main": ..., "aux1": ..., "main.<part>": ...})."""
        if isinstance(outputs, torch.Tensor):
            weights = (self.weights or (1.0,))[:1]
            outputs = [outputs]
        elif not isinstance(outputs, (list, tuple)):
            raise TypeError(
                f"DeepSupervisionLoss: outputs must be a list/tuple [main, aux1, ...] or a tensor, "
                f"got {type(outputs).__name__}"
            )
        elif self.weights is not None and len(outputs) != len(self.weights):
            raise ValueError(
                f"DeepSupervisionLoss: the model gave {len(outputs)} outputs but there are "
                f"{len(self.weights)} weights; give one weight per output (main first)"
            )
        else:
            weights = self.weights or deep_supervision_weights(len(outputs), self.preset)
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        for i, (w, out) in enumerate(zip(weights, outputs)):
            target = resize_target(targets, out)
            if hasattr(self.base, "with_terms"):
                value, parts = self.base.with_terms(out, target)
            else:
                value, parts = self.base(out, target), {}
            name = f"aux{i}" if i else "main"
            terms[name] = value
            terms |= {f"{name}.{k}": v for k, v in parts.items()}
            total = total + w * value
        return total, terms


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
