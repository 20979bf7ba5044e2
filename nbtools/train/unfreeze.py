"""Progressive unfreezing: `TrainConfig(unfreeze={epoch: part})` trains a named part of the model from
that epoch on; until then its parameters are frozen and its BatchNorm layers keep their statistics."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nbtools.config import TrainConfig
from nbtools.train.optim import has_part, sync_trainable


def frozen_parts(cfg: TrainConfig, epoch: int) -> list[str]:
    """Module-name parts still frozen during `epoch` (1-based)."""
    return [part for start, part in sorted(cfg.unfreeze.items()) if epoch < start]


def apply_unfreeze(model: nn.Module, cfg: TrainConfig, epoch: int) -> list[str]:
    """Set requires_grad for every parameter named in `cfg.unfreeze` as it should be during `epoch`.
    Parameters not named there are left as the user set them. Returns the parts unfrozen at `epoch`."""
    still = frozen_parts(cfg, epoch)
    for name, p in model.named_parameters():
        named = [part for part in cfg.unfreeze.values() if has_part(name, part)]
        if named:
            p.requires_grad_(not any(has_part(name, part) for part in still))
    return [part for start, part in cfg.unfreeze.items() if start == epoch]


def frozen_batchnorms(model: nn.Module, cfg: TrainConfig, epoch: int) -> Iterator[_BatchNorm]:
    still = frozen_parts(cfg, epoch)
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and any(has_part(name, part) for part in still):
            yield m


def train_mode(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """model.train(), but BatchNorm inside frozen parts stays in eval mode: a frozen layer must not
    keep shifting its running statistics under the layers that learn on top of it."""
    model.train()
    for bn in frozen_batchnorms(model, cfg, epoch):
        bn.eval()


def unfreeze_at_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int
) -> list[str]:
    """At the start of `epoch`: unfreeze what cfg.unfreeze names for it and give the optimizer the
    parameters that now train. Returns the parts unfrozen (empty most epochs)."""
    unfrozen = apply_unfreeze(model, cfg, epoch)
    if unfrozen:
        sync_trainable(optimizer, model, cfg)
    return unfrozen
