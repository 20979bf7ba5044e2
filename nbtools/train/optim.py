"""Parameter groups with their own learning rates, and the optimizer over them."""

from __future__ import annotations

import logging

import torch
from torch import nn

from nbtools.config import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_GROUP = "default"


def has_part(name: str, part: str) -> bool:
    """True when `part` is a whole dotted piece of `name`: "layer2" in "backbone.layer2.0.conv1.weight"."""
    return f".{name}.".find(f".{part}.") >= 0


def group_of(name: str, group_lrs: dict[str, float]) -> str:
    """The `group_lrs` key that is the longest dotted prefix of `name`, else "default"."""
    best = DEFAULT_GROUP
    for key in group_lrs:
        if (name == key or name.startswith(key + ".")) and (best == DEFAULT_GROUP or len(key) > len(best)):
            best = key
    return best


def group_names(cfg: TrainConfig) -> list[str]:
    return [*cfg.group_lrs, DEFAULT_GROUP]


def group_lr(cfg: TrainConfig, group: str) -> float:
    return cfg.group_lrs.get(group, cfg.lr)


def check_names(model: nn.Module, cfg: TrainConfig) -> None:
    """ValueError unless every `group_lrs` key and `unfreeze` part names a parameter of `model`."""
    names = [n for n, _ in model.named_parameters()]
    top = sorted({n.split(".")[0] for n in names})
    for key in cfg.group_lrs:
        if not any(n == key or n.startswith(key + ".") for n in names):
            raise ValueError(
                f"TrainConfig.group_lrs key {key!r} matches no parameter of {type(model).__name__}; "
                f"group keys are dotted name prefixes, top-level modules here: {', '.join(top)}"
            )
    for epoch, part in cfg.unfreeze.items():
        if not any(has_part(n, part) for n in names):
            raise ValueError(
                f"TrainConfig.unfreeze[{epoch}] = {part!r} matches no parameter of {type(model).__name__}; "
                f"give a dotted module name such as {names[0].rsplit('.', 1)[0]!r}"
            )


def _trainable(model: nn.Module, group: str, cfg: TrainConfig) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if p.requires_grad and group_of(n, cfg.group_lrs) == group]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """One parameter group per name in `group_lrs` plus "default", holding the trainable parameters.

    Fused implementations take the GradScaler protocol (`found_inf`), which lets `fit` skip a
    non-finite step on the device without a host sync.
    """
    check_names(model, cfg)
    groups = [
        {"params": _trainable(model, g, cfg), "lr": group_lr(cfg, g), "name": g} for g in group_names(cfg)
    ]
    device = next(model.parameters()).device
    fused = device.type in ("cpu", "cuda")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused
        )
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def sync_trainable(optimizer: torch.optim.Optimizer, model: nn.Module, cfg: TrainConfig) -> None:
    """Make each optimizer group hold exactly the currently trainable parameters of its name, in
    model order (so a resumed run rebuilds the same order and its optimizer state maps back)."""
    for group in optimizer.param_groups:
        group["params"] = _trainable(model, group["name"], cfg)
