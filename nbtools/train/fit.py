"""`fit`: the training loop, plain code from the first batch to the last checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from nbtools.atomic import save_atomic
from nbtools.config import TrainConfig
from nbtools.diagnose import rules
from nbtools.env import sync_drive
from nbtools.runs import NonFiniteError, Run, Stop
from nbtools.runs.classes import class_names
from nbtools.runs.files import CONFIG_FILE, LAST_FILE, run_path
from nbtools.runs.stop import RAISING_CODES
from nbtools.step import Distributed
from nbtools.train.accel import set_memory_format
from nbtools.train.epoch import end_epoch, report, train_epoch
from nbtools.train.guards import locate_first_nonfinite
from nbtools.train.interrupt import keep_last_step
from nbtools.train.loader import EvalBatches, TrainBatches, make_loader
from nbtools.train.lock import holds_run_lock
from nbtools.train.mlflow_log import MlflowLog, WithMlflow
from nbtools.train.monitor import epoch_finding, preflight_finding
from nbtools.train.optim import check_names, group_names
from nbtools.train.preflight import preflight
from nbtools.train.saving import newest_clean
from nbtools.train.start import prepare_run_dir, start
from nbtools.train.task_setup import setup_task
from nbtools.train.telemetry import Telemetry
from nbtools.train.tensorboard import TensorBoardLog, WithTensorBoard
from nbtools.viz.curves import save_curves
from nbtools.viz.progress import make_progress


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
    device = torch.device(device) if device else dist.device() if dist.active else None
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dist.active and len(val_data) < dist.world:
        raise ValueError(
            f"the validation data has {len(val_data)} samples, fewer than the {dist.world} processes"
        )
    check_names(model, cfg)  # a config that does not fit the model must not cost the run in run_dir
    model.to(device)
    set_memory_format(model, cfg.channels_last)  # before the optimizer state and the EMA copy exist
    # nor data that cannot train, a pair that fits no task, or a monitor the task does not record
    plan = preflight(model, train_data, val_data, loss_fn, device, cfg.channels_last, cfg.task, cfg.monitor)
    replaced = prepare_run_dir(run_dir, resume, overwrite, dist)  # a line to show, or None
    n_batches = TrainBatches(
        len(train_data), cfg.batch_size, cfg.seed, 1, dist.rank, dist.world
    ).num_batches()
    if n_batches == 0:
        raise ValueError(f"the training data is empty (len {len(train_data)}); pass at least one sample")
    progress = make_progress(dashboard, cfg.epochs, verbose and dist.is_main, class_names(meta))
    progress = WithTensorBoard(progress, TensorBoardLog(run_dir, enabled=dist.is_main))
    progress = WithMlflow(progress, mlflow := MlflowLog(run_dir, cfg, enabled=dist.is_main))
    if replaced:
        progress.message(replaced)
    st, checkpoint = start(
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
    cfg, run = st.cfg, st.run  # cfg with its num_workers count (see with_workers)
    run.model = model
    eval_batches = EvalBatches(len(val_data), cfg.eval_batch_size or cfg.batch_size, dist.rank, dist.world)
    val_loader = make_loader(
        val_data, eval_batches, cfg.num_workers, device.type == "cuda", cfg.seed, persistent=True
    )
    if meta is not None:
        run.meta = dict(meta)
    # the task recorded (a resume keeps it); the loss as trained: standardised targets, terms kept
    loss_fn = setup_task(st, plan, model, train_data, loss_fn, progress, checkpoint is None, run.meta)
    if dist.is_main:
        cfg.to_json(run_dir / CONFIG_FILE)
    telemetry = Telemetry(group_names(cfg), reduce=dist.mean, terms=loss_fn)
    # a monitor the validation set cannot define
    report(run, progress, [preflight_finding(cfg, val_data, class_names(run.meta))])
    if checkpoint is not None:
        progress.resumed(run)  # the dashboard starts from the restored history
        st.restore_rng(checkpoint)  # last: nothing from here to the first batch draws random numbers
        del checkpoint
    last_step: list = []  # the micro-batches of the last step, for the non-finite diagnosis
    try:
        with keep_last_step(st, progress):  # the stop button keeps the last completed step
            while st.epoch <= cfg.epochs and run.stop is None:
                t_epoch = time.perf_counter()
                check_inputs = not last_step  # the first epoch of this call
                last_step = train_epoch(
                    st,
                    train_data,
                    loss_fn,
                    n_batches,
                    batch_transform,
                    telemetry,
                    progress,
                    device,
                    check_inputs,
                )
                if run.stop is not None:
                    break
                not_written = end_epoch(st, val_loader, loss_fn, run_dir, t_epoch)
                progress.end_epoch(run.history[-1])
                findings = [
                    *not_written,
                    *rules.step_findings(run),
                    *rules.epoch_findings(run),
                    epoch_finding(cfg, run.history[-1]),
                ]
                report(run, progress, findings)
    finally:
        progress.close()
    raises = run.stop is not None and run.stop.code in RAISING_CODES
    located = (
        locate_first_nonfinite(run, model, last_step, loss_fn, st.precision) if raises and last_step else None
    )
    if located is not None:
        run.stop, findings = located
        for f in findings:
            run.add_finding(f)
    if run.stop is not None and run.stop.code == "nonfinite":
        clean = newest_clean(run_dir)
        run.stop = Stop(run.stop.code, f"{run.stop.message} {clean[0].upper()}{clean[1:]}.")
    if dist.is_main:
        save_atomic(model.state_dict(), run_dir / LAST_FILE)
        run.save()
        save_curves(run)
        mlflow.end(run)  # the figures, best.pt and the final findings, once they are written
        if sync_drive(run_dir):  # Drive uploads in the background; the notebook keeps it mounted
            progress.message(
                f"{run_dir} is on Google Drive, which uploads it in the background; before closing the runtime, "
                f"google.colab.drive.flush_and_unmount() waits for the upload (and unmounts Drive)"
            )
    dist.barrier()
    if run.stop is not None:
        progress.message(f"stopped: {run.stop}")
    if raises:
        raise NonFiniteError(run.stop.message, run)
    return run
