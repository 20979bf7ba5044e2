"""Diagnostics work on copies: the user's model, optimizer and torch RNG come out bit-identical.

The cost is one extra copy of the model (and of the optimizer state, when one is passed) in the
model's memory for as long as the diagnostic runs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def isolated(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """A deep copy of `model` and, if given, a copy of `optimizer` (same class, hyperparameters and
    state, deep-copied) that steps the copy's parameters."""
    if optimizer is None:
        return copy.deepcopy(model), None
    own = {id(p) for p in model.parameters()}
    for i, g in enumerate(optimizer.param_groups):
        foreign = [p for p in g["params"] if id(p) not in own]
        if foreign:
            raise ValueError(
                f"optimizer param group {i} holds {len(foreign)} tensors that are not parameters of the "
                "model passed in; pass the optimizer that was built from this model's parameters"
            )
    # One deepcopy with a shared memo: the copied optimizer refers to the copied model's parameters,
    # and its state (keyed by those parameters) is copied too, never shared with the original.
    return copy.deepcopy((model, optimizer))


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """The torch RNG (CPU, and this CUDA device) as it was before, whatever runs inside."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def batches(data, batch_size: int, seed: int, device: torch.device) -> Iterator[tuple]:
    """Endless (x, y) batches on `device`: from a Dataset (shuffled with a seeded generator, not the
    global RNG), a DataLoader or any re-iterable of (x, y) batches, passing over it again and again."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(
            data,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(data) > batch_size,  # a batch of 1 breaks BatchNorm
            generator=torch.Generator().manual_seed(seed),
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be a Dataset, a DataLoader or an iterable of (x, y) batches, got {type(data).__name__}"
        )
    while True:
        n = 0
        for batch in data:
            if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                raise TypeError(f"each batch must be (x, y), got {type(batch).__name__}")
            n += 1
            yield batch[0].to(device), batch[1].to(device)
        if n == 0:
            raise ValueError("data gave no batch; pass at least one (x, y) batch")
