"""Losses. All take logits; deep-supervision outputs are lists or tuples whose first item is the main output."""

from __future__ import annotations

import torch


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
