"""`fit`: the training loop, plain code from the first batch to the last checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.runs import Run
from nbtools.runs.files import run_path
from nbtools.step import BufferGuard, Distributed
from nbtools.train.epoch import end_epoch, train_epoch
from nbtools.train.finish import finish
from nbtools.train.interrupt import Interrupts, checkpoint_on_interrupt
from nbtools.train.lock import holds_run_lock
from nbtools.train.prepare import begin, open_progress, pick_device, prepare, val_loader_for
from nbtools.train.start import prepare_run_dir, start
from nbtools.train.task_setup import setup_task
from nbtools.train.watcher import Watcher


@holds_run_lock  # one writer per run folder: a second fit is refused, naming the holder
def fit(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    loss_fn: Callable,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: str | int | Path | None = None,
    *,
    overwrite: bool = False,
    batch_transform: Callable | None = None,
    device: str | torch.device | None = None,
    verbose: bool = True,
    dashboard: str | None = "auto",
    meta: dict | None = None,
    allow_changed_data: bool = False,
) -> Run:
    """Train `model`, validating every epoch and checkpointing into `run_dir`.

    resume: None starts a new run (and refuses to train over checkpoints already in run_dir);
    "latest", an epoch number or a checkpoint path continues from there, bit-identically on CPU,
    under the new `cfg` if it differs (the changes are printed and kept in run.config_changes).
    batch_transform(x, y) -> (x, y) runs on the device after each training batch is moved there.
    Raises NonFiniteError (with `.run`) when non-finite steps keep coming; checkpoints stay intact,
    and the message names the first module that went non-finite on the last bad step's batch.
    The doctor's rules (nbtools.diagnose.rules) run at each log interval and epoch end; their findings
    and the guards' land in run.findings and are shown as they appear. dashboard: "auto" (in a
    Jupyter/Colab kernel the live dashboard, as widgets where they render and as plain outputs updated
    in place where not: nbtools.viz.frontend; text elsewhere), "widgets", "image", "text", or None /
    "off" (verbose=False shows nothing either way); when fit ends, however, the dashboard is left as a
    plain PNG with the findings as text. With `tensorboard` installed, the telemetry and epoch records
    also go to TensorBoard event files in run_dir (nbtools.train.tensorboard), and with
    TrainConfig(mlflow=...) to an MLflow run that resumes continue (nbtools.train.mlflow_log). meta: plain-JSON facts kept with the run (metrics.json and
    every checkpoint), e.g. the recipe that built the model, so a resume notebook can rebuild it.
    allow_changed_data: a resume may train on data of another length from an epoch checkpoint (a
    recipe's load_job(..., allow_changed_data=True) passes it once it has recorded the change).
    Launched by torchrun, it trains with DistributedDataParallel (see nbtools.step.distributed);
    cfg.batch_size is then per process.

    >>> run = nbt.fit(model, train_ds, val_ds, nn.CrossEntropyLoss(), cfg, "runs/demo")  # doctest: +SKIP
    >>> run = nbt.fit(model, train_ds, val_ds, loss, cfg, "runs/demo", resume="latest")  # doctest: +SKIP
    """
    run_dir = run_path(run_dir)  # "~" expanded; messages name the absolute folder
    dist = Distributed.from_env()
    device = pick_device(device, dist)
    # before run_dir is touched: also a pair that fits no task, or a monitor the task does not record
    n_batches, plan = prepare(model, train_data, val_data, loss_fn, cfg, device, dist)
    replaced = prepare_run_dir(run_dir, resume, overwrite, dist)  # a line to show, or None
    progress, mlflow = open_progress(run_dir, cfg, dashboard, verbose and dist.is_main, meta, dist)
    if replaced:
        progress.message(replaced)
    buffers = BufferGuard(
        model
    )  # before the EMA copy (in start): the model's buffers become views of flat tensors
    st, run, checkpoint = start(
        model,
        cfg,
        run_dir,
        resume,
        device,
        -(-n_batches // cfg.grad_accum),
        progress,
        dist,
        len(train_data),
        allow_changed_data,
    )
    cfg = st.cfg  # with its num_workers count (see fill_num_workers)
    run.model = model
    val_loader = val_loader_for(val_data, cfg, device, dist)
    # the task recorded (a resume keeps it); the loss as trained: standardised targets, terms kept
    loss_fn = setup_task(
        st, run, plan, model, train_data, loss_fn, progress, checkpoint is None, meta or run.meta
    )
    watcher = Watcher(run, progress, dist)  # telemetry, guards, the doctor's rules, findings, progress
    watcher.telemetry.watch_terms(loss_fn)  # each term's loss and the per-term gradients
    begin(st, run, watcher, checkpoint, val_data, meta, dist)
    del checkpoint
    interrupts, last_step = Interrupts(), []  # last_step: the micro-batches of the last step
    try:
        with checkpoint_on_interrupt(
            st, run, watcher, dist, interrupts
        ):  # the stop button keeps the last step
            while st.epoch <= cfg.epochs and run.stop is None:
                t_epoch = time.perf_counter()
                if not buffers.intact():  # something replaced a buffer: guard the ones the model holds now
                    buffers = BufferGuard(model)
                check_inputs = not last_step  # the first epoch of this call
                last_step = train_epoch(
                    st, run, watcher, train_data, loss_fn, n_batches, batch_transform, device, check_inputs,
                    dist=dist, interrupts=interrupts, buffers=buffers,
                )  # fmt: skip
                if run.stop is not None:
                    break
                end_epoch(st, run, watcher, val_loader, loss_fn, t_epoch, dist=dist, interrupts=interrupts)
    finally:
        progress.close()
    return finish(st, run, last_step, loss_fn, progress, mlflow, dist)
