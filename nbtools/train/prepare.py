"""How `fit` gets ready to train: the checks that must not cost a run (before the run folder is
touched), the progress it reports to, and the last steps between `start` and the first batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.runs import Run
from nbtools.runs.classes import class_names
from nbtools.runs.files import CONFIG_FILE
from nbtools.step import Distributed
from nbtools.train.accel import set_memory_format
from nbtools.train.loader import EvalBatches, TrainBatches, make_loader
from nbtools.train.mlflow_log import MlflowLog, WithMlflow
from nbtools.train.monitor import preflight_finding
from nbtools.train.optim import check_names
from nbtools.train.preflight import preflight
from nbtools.train.state import TrainState
from nbtools.train.tensorboard import TensorBoardLog, WithTensorBoard
from nbtools.train.watcher import Watcher
from nbtools.viz.progress import make_progress


def pick_device(device: str | torch.device | None, dist: Distributed) -> torch.device:
    """The device asked for; under torchrun this rank's GPU; else CUDA when there is one, else the CPU."""
    picked = torch.device(device) if device else dist.device() if dist.active else None
    return picked or torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    loss_fn: Callable,
    cfg: TrainConfig,
    device: torch.device,
    dist: Distributed,
) -> tuple[int, dict]:
    """Check what would fail a run before its folder is touched (a config that does not fit the model,
    data that cannot train, a pair that fits no task, a monitor the task does not record), put the model
    on `device` in its memory format, and return the training batches per epoch (this rank's) and what
    preflight found of the task (nbtools.train.task_setup)."""
    if dist.active and len(val_data) < dist.world:
        raise ValueError(
            f"the validation data has {len(val_data)} samples, fewer than the {dist.world} processes"
        )
    check_names(model, cfg)  # a config that does not fit the model must not cost the run in run_dir
    model.to(device)
    set_memory_format(model, cfg.channels_last)  # before the optimizer state and the EMA copy exist
    plan = preflight(model, train_data, val_data, loss_fn, device, cfg.channels_last, cfg.task, cfg.monitor)
    n_batches = TrainBatches(
        len(train_data), cfg.batch_size, cfg.seed, 1, dist.rank, dist.world
    ).num_batches()
    if n_batches == 0:
        raise ValueError(f"the training data is empty (len {len(train_data)}); pass at least one sample")
    return n_batches, plan


def open_progress(
    run_dir: Path, cfg: TrainConfig, dashboard, show: bool, meta: dict | None, dist: Distributed
):
    """The progress `fit` reports to (bar or dashboard, with TensorBoard and MLflow behind it), and the
    MLflow log (which `finish` ends). Only rank 0 writes event files and MLflow."""
    progress = make_progress(dashboard, cfg.epochs, show, class_names(meta))
    progress = WithTensorBoard(progress, TensorBoardLog(run_dir, enabled=dist.is_main))
    mlflow = MlflowLog(run_dir, cfg, enabled=dist.is_main)
    return WithMlflow(progress, mlflow), mlflow


def val_loader_for(val_data: Dataset, cfg: TrainConfig, device: torch.device, dist: Distributed):
    """The validation loader, its workers kept across epochs; each rank validates its share."""
    batches = EvalBatches(len(val_data), cfg.eval_batch_size or cfg.batch_size, dist.rank, dist.world)
    return make_loader(val_data, batches, cfg.num_workers, device.type == "cuda", cfg.seed, persistent=True)


def begin(
    st: TrainState,
    run: Run,
    watcher: Watcher,
    checkpoint: dict | None,
    val_data: Dataset,
    meta: dict | None,
    dist: Distributed,
) -> None:
    """After `start`: keep `meta` with the run, write config.json, say what the validation set cannot
    measure, and on a resume show the restored history and restore the watcher's counters and (last:
    nothing from here to the first batch draws random numbers) the RNG states."""
    if meta is not None:
        run.meta = dict(meta)
    if dist.is_main:
        st.cfg.to_json(run.run_dir / CONFIG_FILE)
    # a monitor the validation set cannot define
    watcher.record_findings([preflight_finding(st.cfg, val_data, class_names(run.meta))])
    if checkpoint is not None:
        watcher.progress.resumed(run)  # the dashboard starts from the restored history
        watcher.load_state_dict(checkpoint["guards"])
        st.restore_rng(checkpoint, dist)
