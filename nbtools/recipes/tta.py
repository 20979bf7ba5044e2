"""Test-time augmentation for `predict`: a model's probabilities averaged over flips of its input."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from nbtools.data import Augment3D
from nbtools.losses import main_output


class FlipAverage(nn.Module):
    """model(x) averaged over flips of x: every combination of `dims` (the identity included), in
    probability space (sigmoid for one logit, softmax for more, in float64 outside autocast), returned
    as logits again (the logit of the mean probability, or its log), so that everything downstream
    reads it like the model's output. The model itself runs under the caller's autocast. values=True (a
    regression model) averages the outputs themselves, in float64.

    >>> tta = FlipAverage(model, dims=(2, 3, 4))   # (B, C, D, H, W): 8 passes   # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, dims: tuple[int, ...], values: bool = False) -> None:
        super().__init__()
        self.model, self.dims, self.values = model, tuple(dims), values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        combos = [c for r in range(len(self.dims) + 1) for c in itertools.combinations(self.dims, r)]
        total = None
        for flip in combos:
            out = main_output(self.model(x.flip(flip) if flip else x))
            with torch.autocast(x.device.type, enabled=False):
                z = out.double()
                if not self.values:
                    z = torch.sigmoid(z) if z.dim() == 1 or z.shape[1] == 1 else torch.softmax(z, dim=1)
                total = z if total is None else total + z
        with torch.autocast(x.device.type, enabled=False):
            mean = total / len(combos)
            if self.values:
                return mean
            if mean.dim() == 1 or mean.shape[1] == 1:
                return torch.log(mean) - torch.log1p(-mean)
            return torch.log(mean)


def flip_dims(sample_dims: int, batch_transform=None) -> tuple[int, ...]:
    """The batch dims TTA flips for samples of `sample_dims` dims: for volumes (C, D, H, W) the axes the
    run's Augment3D flipped (D, H and W when the run had none); for images (C, H, W) the width."""
    if sample_dims == 4:
        aug = batch_transform
        axes = aug.flip_axes if isinstance(aug, Augment3D) and aug.probs["p_flip"] > 0 else (0, 1, 2)
        return tuple(2 + a for a in axes)
    if sample_dims == 3:
        return (3,)
    raise ValueError(
        f"tta=True flips volumes (C, D, H, W) and images (C, H, W); these samples have {sample_dims} dims"
    )
