"""The training state a checkpoint holds, and its round trip through one.

`TrainState` is what training changes and a resume must restore bit for bit: the model, optimizer,
scheduler, precision (GradScaler), EMA, early stopping and the EMA's best epoch, the unfreeze state
(which parameters train), the epoch/batch/step counters with the data length they count in, and
(in the checkpoint) the RNG states. The run record (nbtools.runs.Run: history, findings) and the
watcher's guard counters (nbtools.train.watcher) go into the same checkpoint, passed in by `fit`;
the session's things (process group, interrupts, buffer guard, progress) are never saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel

from nbtools.config import TrainConfig
from nbtools.env import seed_everything
from nbtools.runs import Run
from nbtools.runs.checkpoints import FORMAT
from nbtools.runs.upgrade import VERSION
from nbtools.step import Distributed, Precision
from nbtools.train.early_stop import EarlyStopping
from nbtools.train.ema import build_ema
from nbtools.train.optim import build_optimizer, sync_trainable
from nbtools.train.rng import capture_rng, restore_rng
from nbtools.train.schedule import build_scheduler
from nbtools.train.unfreeze import apply_unfreeze

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    precision: Precision
    ema: AveragedModel | None
    early: EarlyStopping
    ema_best: EarlyStopping | None = None  # tracks the EMA model's best epoch (never stops the run)
    epoch: int = 1  # the epoch being trained (1-based)
    batch: int = 0  # batches of `epoch` already trained on
    step: int = 0  # optimizer steps taken (skipped ones included)
    train_len: int | None = None  # len(train_data): what `batch` counts in; a resume refuses other data

    @classmethod
    def create(
        cls,
        cfg: TrainConfig,
        model: nn.Module,
        device: torch.device,
        steps_per_epoch: int,
        train_len: int | None,
    ):
        """A new state for `model` (its BufferGuard, if any, built before: the EMA copies the buffers)."""
        apply_unfreeze(model, cfg, 1)
        tie_break = cfg.monitor != "val_loss"  # ties of the monitored metric are broken by the val loss
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(
            optimizer,
            round(cfg.warmup_epochs * steps_per_epoch),
            cfg.epochs * steps_per_epoch,
            cfg.min_lr_factor,
        )
        return cls(
            cfg=cfg,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            precision=Precision(cfg.precision, device),
            ema=build_ema(model, cfg.ema_decay) if cfg.ema_decay else None,
            early=EarlyStopping(cfg.monitor_mode, cfg.patience, cfg.min_delta, cfg.min_epochs, tie_break),
            ema_best=EarlyStopping(cfg.monitor_mode, None, cfg.min_delta, 0, tie_break)
            if cfg.ema_decay
            else None,
            train_len=train_len,
        )

    def to_checkpoint(self, run: Run, guards: dict, dist: Distributed) -> dict[str, Any]:
        """The whole state as tensors and plain types, with the run record and the watcher's guard state
        (Watcher.state_dict). Under torchrun every rank must call it (each rank's
        RNG states are gathered); rank 0 writes it."""
        last = run.history[-1] if run.history else {}
        summary = {
            k: last[k] for k in ("val_loss", "val_auc", "val_f1", "val_acc") if last.get(k) is not None
        }
        return {
            "format": FORMAT,
            "version": VERSION,
            "epoch": self.epoch - 1,  # completed epochs; `batch` counts those done in the next
            "batch": self.batch,
            "step": self.step,
            "summary": summary,
            "config": self.cfg.to_dict(),
            "trainable": [n for n, p in self.model.named_parameters() if p.requires_grad],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "precision": self.precision.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "early_stopping": self.early.state_dict(),
            "ema_best": self.ema_best.state_dict() if self.ema_best is not None else None,
            "guards": guards,
            "run": run.to_dict(),
            "data": {"train_len": self.train_len},
            "run_dir": str(run.run_dir),  # the folder's identity: a resume elsewhere is told or refused
            "rng": capture_rng(),
            "rng_ranks": dist.gather_objects(capture_rng()) if dist.active else [],
        }

    def load_checkpoint(self, state: dict[str, Any]) -> TrainConfig:
        """Restore from a checkpoint dict (in today's shape: nbtools.runs.upgrade); returns the config the
        checkpoint was trained with. The guard counters are the watcher's (Watcher.load_state_dict).

        The current `cfg` wins where it differs (lower LR, tighter clipping, more epochs ...); only
        changes that would make the saved optimizer state meaningless are refused.
        """
        old = TrainConfig.from_dict(state["config"])
        if old.optimizer != self.cfg.optimizer or list(old.group_lrs) != list(self.cfg.group_lrs):
            raise ValueError(
                f"cannot resume with a different optimizer or parameter groups: checkpoint has optimizer="
                f"{old.optimizer!r}, group_lrs keys {list(old.group_lrs)}; config has {self.cfg.optimizer!r}, "
                f"{list(self.cfg.group_lrs)}. LR values may change; the groups may not. Start a new run_dir instead."
            )
        self.model.load_state_dict(state["model"])
        trainable = set(state["trainable"])
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in trainable)
        sync_trainable(self.optimizer, self.model, self.cfg)  # the groups as they were when saved
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.cfg.weight_decay
            if self.cfg.optimizer == "sgd":
                group["momentum"] = self.cfg.momentum
        # the plan as recorded; a new one (epochs, LRs) is bent from here by schedule.resume_plan
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["precision"])
        if self.ema is not None:
            if state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = build_ema(self.model, self.cfg.ema_decay)
                log.info("EMA is new in this config: it starts from the resumed weights")
        if old.monitor == self.cfg.monitor:
            self.early.load_state_dict(state["early_stopping"])
            if self.ema_best is not None and state["ema_best"] is not None:
                self.ema_best.load_state_dict(state["ema_best"])
        else:
            log.info(
                "monitor changed from %s to %s: best-epoch tracking starts again",
                old.monitor,
                self.cfg.monitor,
            )
        self.epoch = state["epoch"] + 1
        self.batch = state["batch"]
        self.step = state["step"]
        return old

    def restore_rng(self, state: dict[str, Any], dist: Distributed) -> None:
        """The RNG states of `state` (this rank's), last before the first batch."""
        ranks = state["rng_ranks"]
        if dist.active and len(ranks) == dist.world:
            restore_rng(ranks[dist.rank])
            return
        restore_rng(state["rng"])
        if dist.active:
            # A different number of processes than the run was saved with: give each rank its own
            # stream (the run continues, but not bit-identically).
            log.warning(
                "checkpoint saved with %d ranks, resuming with %d: RNG streams reseeded",
                len(ranks) or 1,
                dist.world,
            )
            seed_everything((self.cfg.seed + 1_000_003 * dist.rank + self.step) % 2**63)
