"""`fit`: the training loop, plain code from the first batch to the last checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from nbtools.atomic import remove_stale_temp_files, save_atomic
from nbtools.config import TrainConfig
from nbtools.diagnose import rules
from nbtools.diagnose.inputs import input_range
from nbtools.env import seed_everything
from nbtools.train import checkpoint as ckpt
from nbtools.train.distributed import Distributed
from nbtools.train.ema import update_ema
from nbtools.train.evaluate import evaluate
from nbtools.train.guards import check_interval, name_first_nonfinite
from nbtools.train.loader import EvalBatches, TrainBatches, epoch_seed, make_loader
from nbtools.train.optim import apply_unfreeze, check_names, group_names, sync_trainable, train_mode
from nbtools.train.progress import make_progress
from nbtools.train.run import CONFIG_FILE, NonFiniteError, Run, RunExistsError
from nbtools.train.state import TrainState
from nbtools.train.step import train_step
from nbtools.train.telemetry import Telemetry
from nbtools.viz.curves import save_curves

log = logging.getLogger(__name__)

_RUN_FILES = (
    "epoch_*.pt",
    "best.pt",
    "best_ema.pt",
    "last.pt",
    "best_val.pt",
    "metrics.json",
    "config.json",
    "*.png",
)


def _prepare_run_dir(run_dir: Path, resume, overwrite: bool, dist: Distributed) -> None:
    found = ckpt.list_checkpoints(run_dir)
    if found and resume is None and not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run ({ckpt.describe_epochs(found)}, newest {found[-1].path.name}); "
            f'fit will not train over it. Choose one: resume="latest" (or an epoch number) to continue it '
            f"(in the notebooks: run 04_resume), a new run_dir to start another, or overwrite=True to delete "
            f"it and start again."
        )
    if dist.is_main:
        if overwrite and resume is None:
            for pattern in _RUN_FILES:
                for p in run_dir.glob(pattern):
                    p.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
    dist.barrier()


def _start(
    model, cfg, run_dir, resume, device, steps_per_epoch, progress, dist
) -> tuple[TrainState, dict | None]:
    """A fresh TrainState, or one restored from a checkpoint (whose RNG states are restored last)."""
    if resume is None:
        seed_everything(cfg.seed + dist.rank)
        return TrainState.create(cfg, model, device, steps_per_epoch, Run(run_dir, cfg), dist), None
    info = ckpt.find_checkpoint(run_dir, resume)
    checkpoint = ckpt.load_checkpoint(info.path)
    run = Run.from_dict(run_dir, checkpoint["run"], config=cfg)
    run.stopped = ""
    st = TrainState.create(cfg, model, device, steps_per_epoch, run, dist)
    changes = st.load_checkpoint(checkpoint).diff(cfg)
    where = f"epoch {st.epoch - 1}" + (f" + {st.batch} batches" if st.batch else "")
    progress.message(f"resuming {run_dir} from {info.path.name} ({where}, step {st.step})")
    if changes:
        run.config_changes.append({"epoch": st.epoch - 1, "step": st.step, "changes": changes})
        for k, (a, b) in changes.items():
            progress.message(f"  config change: {k}: {a!r} -> {b!r}")
    return st, checkpoint


def _to_device(batch, device: torch.device, where: str):
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(f"fit expects each sample to be (input, label); {where} gave {type(batch).__name__}")
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


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
) -> Run:
    """Train `model`, validating every epoch and checkpointing into `run_dir`.

    resume: None starts a new run (and refuses to train over checkpoints already in run_dir);
    "latest", an epoch number or a checkpoint path continues from there, bit-identically on CPU,
    under the new `cfg` if it differs (the changes are printed and kept in run.config_changes).
    batch_transform(x, y) -> (x, y) runs on the device after each training batch is moved there.
    Raises NonFiniteError (with `.run`) when non-finite steps keep coming; checkpoints stay intact,
    and the message names the first module that went non-finite on the last bad step's batch.
    The doctor's rules (nbtools.diagnose.rules) run at each log interval and epoch end; their findings
    and the guards' land in run.findings and are shown as they appear. dashboard: "auto" (the live
    widgets dashboard in a Jupyter/Colab kernel, text elsewhere), "text", "widgets", or None / "off"
    (verbose=False shows nothing either way). meta: plain-JSON facts kept with the run (metrics.json and
    every checkpoint), e.g. the recipe that built the model, so a resume notebook can rebuild it.
    Launched by torchrun, it trains with DistributedDataParallel (see nbtools.train.distributed);
    cfg.batch_size is then per process.

    >>> run = nbt.fit(model, train_ds, val_ds, nn.CrossEntropyLoss(), cfg, "runs/demo")  # doctest: +SKIP
    >>> run = nbt.fit(model, train_ds, val_ds, loss, cfg, "runs/demo", resume="latest")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    dist = Distributed.from_env()
    device = torch.device(device) if device else dist.device() if dist.active else None
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dist.active and len(val_data) < dist.world:
        raise ValueError(
            f"the validation data has {len(val_data)} samples, fewer than the {dist.world} processes"
        )
    check_names(model, cfg)  # a config that does not fit the model must not cost the run in run_dir
    _prepare_run_dir(run_dir, resume, overwrite, dist)
    model.to(device)
    n_batches = TrainBatches(
        len(train_data), cfg.batch_size, cfg.seed, 1, dist.rank, dist.world
    ).num_batches()
    if n_batches == 0:
        raise ValueError(f"the training data is empty (len {len(train_data)}); pass at least one sample")
    eval_batches = EvalBatches(len(val_data), cfg.eval_batch_size or cfg.batch_size, dist.rank, dist.world)
    val_loader = make_loader(val_data, eval_batches, cfg.num_workers, device.type == "cuda", cfg.seed)
    progress = make_progress(dashboard, cfg.epochs, verbose and dist.is_main)
    st, checkpoint = _start(
        model, cfg, run_dir, resume, device, -(-n_batches // cfg.grad_accum), progress, dist
    )
    run = st.run
    run.model, run.ema_model = model, st.ema
    if meta is not None:
        run.meta = dict(meta)
    if dist.is_main:
        cfg.to_json(run_dir / CONFIG_FILE)
    telemetry = Telemetry(group_names(cfg), reduce=dist.mean)
    if checkpoint is not None:
        progress.resumed(run)  # the dashboard starts from the restored history
        st.restore_rng(checkpoint)  # last: nothing from here to the first batch draws random numbers
        del checkpoint
    last_step: list = []  # the micro-batches of the last step, for the non-finite diagnosis
    try:
        while st.epoch <= cfg.epochs and not run.stopped:
            t_epoch = time.perf_counter()
            check_inputs = not last_step  # the first epoch of this call
            last_step = _train_epoch(
                st, train_data, loss_fn, n_batches, batch_transform, telemetry, progress, device, check_inputs
            )
            if run.stopped:
                break
            _end_epoch(st, val_loader, loss_fn, run_dir, t_epoch)
            progress.end_epoch(run.history[-1])
            _report(run, progress, rules.epoch_findings(run))
    finally:
        progress.close()
    if run.stopped.startswith("non-finite") and last_step:
        name_first_nonfinite(run, model, last_step, loss_fn, st.precision)
    if dist.is_main:
        save_atomic(model.state_dict(), run_dir / "last.pt")
        run.save()
        save_curves(run)
    dist.barrier()
    if run.stopped:
        progress.message(f"stopped: {run.stopped}")
    if run.stopped.startswith("non-finite"):
        raise NonFiniteError(run.stopped, run)
    return run


def _report(run: Run, progress, findings) -> None:
    """Record findings (a repeated code updates its evidence) and show the new ones."""
    for f in findings:
        if f is not None and run.add_finding(f):
            progress.finding(f)


def _train_epoch(
    st: TrainState, data, loss_fn, n_batches, batch_transform, telemetry, progress, device, check_inputs
) -> list:
    """Train from batch st.batch to the end of epoch st.epoch (or until a guard stops the run).
    Returns the last step's micro-batches. check_inputs: look at the first batch's range (once per fit)."""
    cfg, run, model, dist = st.cfg, st.run, st.model, st.dist
    if apply_unfreeze(model, cfg, st.epoch):
        sync_trainable(st.optimizer, model, cfg)
        progress.message(f"epoch {st.epoch}: unfroze {cfg.unfreeze[st.epoch]}")
    forward_model = dist.wrap(model)  # DDP reduces only what is trainable when it is built
    train_mode(model, cfg, st.epoch)
    sampler = TrainBatches(len(data), cfg.batch_size, cfg.seed, st.epoch, dist.rank, dist.world, st.batch)
    loader_seed = epoch_seed(cfg.seed, st.epoch, stream=1 + dist.rank)
    batches = iter(make_loader(data, sampler, cfg.num_workers, device.type == "cuda", loader_seed))
    telemetry.start_interval(model)
    progress.start_epoch(st.epoch, n_batches, st.batch)
    last_save = (time.monotonic(), st.step)
    micro: list = []
    while st.batch < n_batches and not run.stopped:
        micro = []
        for i in range(min(cfg.grad_accum, n_batches - st.batch)):
            x, y = _to_device(next(batches), device, f"training batch {st.batch + i} of epoch {st.epoch}")
            micro.append(batch_transform(x, y) if batch_transform is not None else (x, y))
        if check_inputs:  # one host sync, once
            _report(run, progress, [input_range(micro[0][0], st.epoch, st.step + 1)])
            check_inputs = False
        result = train_step(forward_model, micro, loss_fn, st.optimizer, st.precision, cfg.clip_norm, dist)
        st.scheduler.step()
        if st.ema is not None:
            update_ema(st.ema, model)
        st.step, st.batch = st.step + 1, st.batch + len(micro)
        telemetry.record(result)
        progress.batches_done(len(micro))
        if cfg.nan_policy == "raise" and result.bad.item():
            run.stopped = f"non-finite loss or gradient at step {st.step} (nan_policy='raise')"
        if len(telemetry) == cfg.log_every or st.batch == n_batches or run.stopped:
            scale = st.precision.scaler.get_scale() if st.precision.scaler.is_enabled() else None
            record = telemetry.flush(model, st.epoch, st.step, st.scheduler.get_last_lr(), scale)
            run.steps.append(record)
            progress.interval(record)
            for finding, is_new in check_interval(run, st, record):
                if is_new:
                    progress.finding(finding)
            _report(run, progress, rules.step_findings(run))
            every = cfg.checkpoint_every_steps
            minutes = cfg.checkpoint_every_minutes
            due = (every and st.step - last_save[1] >= every) or (
                minutes and time.monotonic() - last_save[0] >= 60 * minutes
            )
            if dist.agree(bool(due)) and st.batch < n_batches and not run.stopped:
                state = st.to_checkpoint()
                if dist.is_main:
                    save_atomic(state, st.run.run_dir / ckpt.mid_epoch_name(st.epoch, st.step))
                last_save = (time.monotonic(), st.step)
    return micro


def _end_epoch(st: TrainState, val_loader, loss_fn, run_dir: Path, t_epoch: float) -> None:
    """Validate, track the best epochs, check early stopping, write the epoch checkpoint and metrics."""
    cfg, run, epoch, dist = st.cfg, st.run, st.epoch, st.dist
    # The epoch's train loss from its telemetry intervals (mean over good steps), so a mid-epoch
    # resume reports the same number as a straight run.
    intervals = [(r["loss"], r["steps"] - r["skipped"]) for r in run.steps if r["epoch"] == epoch]
    n_good = sum(n for _, n in intervals)
    record = {
        "epoch": epoch,
        "step": st.step,
        "train_loss": sum(loss * n for loss, n in intervals if n) / n_good if n_good else None,
        "skipped": sum(r["skipped"] for r in run.steps if r["epoch"] == epoch),
        "lr": dict(zip(group_names(cfg), st.scheduler.get_last_lr())),
    }
    metrics, logits, targets = evaluate(st.model, val_loader, st.precision, loss_fn, cfg.threshold, dist=dist)
    record.update(metrics)
    if st.ema is not None:
        ema = evaluate(st.ema.module, val_loader, st.precision, loss_fn, cfg.threshold, "ema_val_", dist)
        record.update(ema[0])
    record["seconds"] = time.perf_counter() - t_epoch
    run.history.append(record)
    save = dist.is_main
    if st.early.improved(record[cfg.monitor]):
        run.best_epoch = epoch
        if save:
            save_atomic(st.model.state_dict(), run_dir / "best.pt")
            save_atomic({"epoch": epoch, "logits": logits, "targets": targets}, run_dir / "best_val.pt")
    if st.early.update(record[cfg.monitor], epoch):
        run.stopped = (
            f"early stopping: {cfg.monitor} did not improve by more than {cfg.min_delta} for {cfg.patience} "
            f"epochs (best {st.early.best:.4g} at epoch {st.early.best_epoch})"
        )
    if st.ema_best is not None:
        if st.ema_best.improved(record["ema_" + cfg.monitor]):
            run.best_ema_epoch = epoch
            if save:
                save_atomic(st.ema.module.state_dict(), run_dir / "best_ema.pt")
        st.ema_best.update(record["ema_" + cfg.monitor], epoch)
    st.epoch, st.batch = epoch + 1, 0
    state = st.to_checkpoint()
    if save:
        save_atomic(state, run_dir / ckpt.epoch_name(epoch))
        ckpt.prune_checkpoints(run_dir, cfg.keep_last)
        run.save()
