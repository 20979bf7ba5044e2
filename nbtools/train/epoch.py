"""One epoch of `fit`: train from the resume point to the end of the epoch, then validate, track the
best epochs, check early stopping and write the epoch checkpoint.

`st` is the checkpointed state (nbtools.train.state), `run` the run record, `watcher` what looks at
each step and epoch (nbtools.train.watcher); the session's things (`dist`, `interrupts`, `buffers`)
come from `fit` by name."""

from __future__ import annotations

import time

import torch

from nbtools.atomic import save_atomic
from nbtools.diagnose.chance import first_output, task_record
from nbtools.diagnose.inputs import input_range
from nbtools.runs import Run, Stop
from nbtools.runs.files import BEST_EMA_FILE, BEST_FILE, BEST_VAL_FILE, epoch_name, mid_epoch_name
from nbtools.step import BufferGuard, Distributed, train_step
from nbtools.train.accel import as_input, compiled
from nbtools.train.ema import ema_pairs, update_ema
from nbtools.train.evaluate import evaluate, to_device
from nbtools.train.interrupt import Interrupts
from nbtools.train.loader import TrainBatches, epoch_seed, make_loader
from nbtools.train.monitor import best_text
from nbtools.train.optim import group_names
from nbtools.train.saving import save_checkpoint
from nbtools.train.state import TrainState
from nbtools.train.unfreeze import train_mode, unfreeze_at_epoch
from nbtools.train.watcher import Decision, Watcher


def _to_device(batch, device: torch.device, st: TrainState, i: int):
    """Training batch st.batch + i (an (input, label) pair) on the device."""
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(
            f"fit expects each sample to be (input, label); training batch {st.batch + i} of epoch {st.epoch} "
            f"gave {type(batch).__name__}"
        )
    x, y = batch
    return x.to(device, non_blocking=True), to_device(y, device)  # y: a tensor, or a dict/tuple (heads)


def apply_decision(decision: Decision, st: TrainState, run: Run) -> None:
    """Act on what the watcher decided: fall back from fp16, stop the run (a stop already set stays)."""
    if decision.fall_back is not None:
        st.precision.fall_back(decision.fall_back)
    run.stop = run.stop or decision.stop


def train_epoch(
    st: TrainState,
    run: Run,
    watcher: Watcher,
    data,
    loss_fn,
    n_batches: int,
    batch_transform,
    device: torch.device,
    check_inputs: bool,
    *,
    dist: Distributed,
    interrupts: Interrupts,
    buffers: BufferGuard,
) -> list:
    """Train from batch st.batch to the end of epoch st.epoch (or until a guard stops the run).
    Returns the last step's micro-batches. check_inputs: look at the first batch's range (once per fit)."""
    cfg, model, progress = st.cfg, st.model, watcher.progress
    if unfreeze_at_epoch(model, st.optimizer, cfg, st.epoch):
        progress.message(f"epoch {st.epoch}: unfroze {cfg.unfreeze[st.epoch]}")
    pairs = ema_pairs(st.ema, model) if st.ema is not None else None  # after the guard: the buffers it holds
    forward_model = compiled(dist.wrap(model), cfg.compile)  # DDP reduces only what is trainable when built
    train_mode(model, cfg, st.epoch)
    sampler = TrainBatches(len(data), cfg.batch_size, cfg.seed, st.epoch, dist.rank, dist.world, st.batch)
    loader_seed = epoch_seed(cfg.seed, st.epoch, stream=1 + dist.rank)
    batches = iter(make_loader(data, sampler, cfg.num_workers, device.type == "cuda", loader_seed))
    watcher.start_epoch(st, n_batches)
    last_save = (time.monotonic(), st.step)
    micro: list = []
    try:
        while st.batch < n_batches and run.stop is None:
            with interrupts.critical():  # the stop button waits for this step (nbtools.train.interrupt)
                micro = []
                for i in range(min(cfg.grad_accum, n_batches - st.batch)):
                    x, y = _to_device(next(batches), device, st, i)
                    x, y = batch_transform(x, y) if batch_transform is not None else (x, y)
                    micro.append((as_input(x, cfg.channels_last), y))
                args = (
                    forward_model,
                    micro,
                    loss_fn,
                    st.optimizer,
                    st.precision,
                    cfg.clip_norm,
                    dist,
                    buffers,
                )
                result = _step(st, run, watcher, args, data, check_inputs, pairs)
                check_inputs = False
                decision = watcher.step(result, st, micro, loss_fn, last_batch=st.batch == n_batches)
                apply_decision(decision, st, run)
                if decision.interval_ended:
                    last_save = _checkpoint_if_due(st, run, watcher, dist, last_save, n_batches)
    except KeyboardInterrupt:
        if len(watcher.telemetry) and not interrupts.partial:
            with interrupts.critical():  # the steps since the last read become a record
                apply_decision(watcher.end_interval(st, micro, loss_fn), st, run)
        raise
    return micro


def _step(st: TrainState, run: Run, watcher: Watcher, args: tuple, data, check_inputs: bool, pairs):
    """One optimizer step (`args`: train_step's), then the scheduler, the EMA (`pairs`: its ema_pairs)
    and the counters."""
    model, micro, loss_fn = st.model, args[1], args[2]
    record_task = check_inputs and "outputs" not in run.task  # once per run: a resume keeps the record
    if check_inputs:  # one host sync, once
        watcher.record_findings([input_range(micro[0][0], st.epoch, st.step + 1)])
    if record_task:
        with first_output(model) as out:
            result = train_step(*args)
        if out:  # the hook saw the forward
            run.task = {**run.task, **task_record(out[0], loss_fn, data, micro[0][1])}
    else:
        result = train_step(*args)
    st.scheduler.step()
    if st.ema is not None:
        update_ema(st.ema, model, result.bad, pairs)
    st.step, st.batch = st.step + 1, st.batch + len(micro)
    watcher.progress.batches_done(len(micro))
    return result


def _checkpoint_if_due(
    st: TrainState, run: Run, watcher: Watcher, dist, last_save: tuple[float, int], n_batches
):
    """The mid-epoch checkpoint every checkpoint_every_steps / _minutes; returns (time, step) of the last."""
    every, minutes = st.cfg.checkpoint_every_steps, st.cfg.checkpoint_every_minutes
    due = (every and st.step - last_save[1] >= every) or (
        minutes and time.monotonic() - last_save[0] >= 60 * minutes
    )
    if not (dist.agree(bool(due)) and st.batch < n_batches and run.stop is None):
        return last_save
    path = run.run_dir / mid_epoch_name(st.epoch, st.step)
    watcher.record_findings([save_checkpoint(st, run, watcher, dist, path)])
    return time.monotonic(), st.step


def end_epoch(
    st: TrainState, run: Run, watcher: Watcher, val_loader, loss_fn, t_epoch: float, *, dist, interrupts
) -> None:
    """Validate and track the best epochs (`validate_epoch`), record the epoch's findings, write the
    epoch checkpoint (holding them) and metrics.json. The stop button waits for all of it
    (nbtools.train.interrupt)."""
    with interrupts.critical():
        record = validate_epoch(st, run, val_loader, loss_fn, t_epoch, dist)
        watcher.end_epoch(record)
        st.epoch, st.batch = st.epoch + 1, 0
        path = run.run_dir / epoch_name(record["epoch"])
        watcher.record_findings([save_checkpoint(st, run, watcher, dist, path, prune=True)])
        if dist.is_main:
            run.save()


def validate_epoch(st: TrainState, run: Run, val_loader, loss_fn, t_epoch: float, dist) -> dict:
    """The epoch-end validation and best tracking: evaluate the model (and the EMA), append the epoch
    record to run.history, save best.pt / best_val.pt / best_ema.pt on a new best, and set run.stop
    when early stopping says so. Returns the record."""
    cfg, epoch, run_dir = st.cfg, st.epoch, run.run_dir
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
    fmt = {"channels_last": cfg.channels_last}
    metrics, kept = evaluate(st.model, val_loader, st.precision, loss_fn, cfg.threshold, dist=dist, **fmt)
    record.update(metrics)
    if st.ema is not None:
        ema = evaluate(
            st.ema.module, val_loader, st.precision, loss_fn, cfg.threshold, "ema_val_", dist, **fmt
        )
        record.update(ema[0])
    record["seconds"] = time.perf_counter() - t_epoch
    run.history.append(record)
    save = dist.is_main
    # the best epoch: the best monitored value, ties broken by the val loss (nbtools.train.early_stop)
    value, loss = record[cfg.monitor], record.get("val_loss")
    if st.early.is_best(value, loss):
        run.best_epoch = epoch
        if save:
            save_atomic(st.model.state_dict(), run_dir / BEST_FILE)
            save_atomic({"epoch": epoch, **kept}, run_dir / BEST_VAL_FILE)  # no seg logits: Dice per case
    if st.early.update(value, epoch, loss):
        tie = " (nor tied it at a lower val_loss)" if st.early.tie_break else ""
        run.stop = Stop(
            "early-stop",
            f"early stopping: {cfg.monitor} did not improve by more than {cfg.min_delta}{tie} for "
            f"{cfg.patience} epochs ({best_text(st.early.best, st.early.best_epoch)})",
        )
    if st.ema_best is not None:
        value, loss = record["ema_" + cfg.monitor], record.get("ema_val_loss")
        if st.ema_best.is_best(value, loss):
            run.best_ema_epoch = epoch
            if save:
                save_atomic(st.ema.module.state_dict(), run_dir / BEST_EMA_FILE)
        st.ema_best.update(value, epoch, loss)
    return record
