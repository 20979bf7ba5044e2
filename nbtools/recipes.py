"""Ready-made jobs: the data, model, loss and config the CLI, the notebooks and the benchmarks share.

Each recipe returns a `Job`; pass its parts to `nbt.fit`. `smoke=True` shrinks it to seconds for CI
(the notebooks set it from NBTOOLS_SMOKE=1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.data import SyntheticVolumes
from nbtools.models import resnet3d


@dataclass
class Job:
    model: nn.Module
    train_data: Dataset
    val_data: Dataset
    loss_fn: nn.Module
    config: TrainConfig


def smoke_mode() -> bool:
    """True when NBTOOLS_SMOKE=1: CI runs every notebook with tiny sizes."""
    return os.environ.get("NBTOOLS_SMOKE", "") not in ("", "0")


def resnet3d_job(
    smoke: bool = False,
    n_train: int = 256,
    n_val: int = 128,
    size: int = 32,
    depth: int = 10,
    width: float = 0.25,
    **config: Any,
) -> Job:
    """A 3D ResNet-10 (width 0.25) on SyntheticVolumes at 32^3: under a minute on a 2-core CPU.

    Train and val volumes come from different seeds (no sample is in both). Keyword arguments
    override TrainConfig fields, e.g. resnet3d_job(epochs=20, precision="bf16").
    """
    if smoke:
        n_train, n_val, size = 32, 16, 16
        config.setdefault("epochs", 2)
    cfg = dict(
        epochs=8,
        batch_size=8,
        lr=2e-3,
        warmup_epochs=1,
        clip_norm=1.0,
        ema_decay=0.99,
        monitor="val_auc",
        checkpoint_every_minutes=10.0,
        seed=0,
    )
    cfg.update(config)
    return Job(
        model=resnet3d(depth=depth, in_channels=1, num_classes=2, dropout=0.1, width=width),
        train_data=SyntheticVolumes(n=n_train, shape=(size,) * 3, positive_fraction=0.3, seed=1),
        val_data=SyntheticVolumes(n=n_val, shape=(size,) * 3, positive_fraction=0.3, seed=2),
        loss_fn=nn.CrossEntropyLoss(),
        config=TrainConfig(**cfg),
    )
