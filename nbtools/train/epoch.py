"""One epoch of `fit`: train from the resume point to the end of the epoch, then validate, track the
best epochs, check early stopping and write the epoch checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from nbtools.atomic import save_atomic
from nbtools.diagnose import rules
from nbtools.diagnose.chance import first_output, task_record
from nbtools.diagnose.inputs import input_range
from nbtools.runs import Finding, Run, Stop
from nbtools.runs.files import BEST_EMA_FILE, BEST_FILE, BEST_VAL_FILE, epoch_name, mid_epoch_name
from nbtools.step import BufferGuard, train_step
from nbtools.train.accel import as_input, compiled
from nbtools.train.ema import ema_pairs, update_ema
from nbtools.train.evaluate import evaluate, to_device
from nbtools.train.guards import check_interval, nan_policy_stop, nothing_to_guard, probe_fp16
from nbtools.train.loader import TrainBatches, epoch_seed, make_loader
from nbtools.train.monitor import best_text
from nbtools.train.optim import apply_unfreeze, group_names, sync_trainable, train_mode
from nbtools.train.saving import save_checkpoint
from nbtools.train.state import TrainState


def report(run: Run, progress, findings: list[Finding | None]) -> None:
    """Record findings (a repeated code updates its evidence) and show the new ones."""
    for f in findings:
        if f is not None and run.add_finding(f):
            progress.finding(f)


def _to_device(batch, device: torch.device, st: TrainState, i: int):
    """Training batch st.batch + i (an (input, label) pair) on the device."""
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(
            f"fit expects each sample to be (input, label); training batch {st.batch + i} of epoch {st.epoch} "
            f"gave {type(batch).__name__}"
        )
    x, y = batch
    return x.to(device, non_blocking=True), to_device(y, device)  # y: a tensor, or a dict/tuple (heads)


def train_epoch(
    st: TrainState, data, loss_fn, n_batches, batch_transform, telemetry, progress, device, check_inputs
) -> list:
    """Train from batch st.batch to the end of epoch st.epoch (or until a guard stops the run).
    Returns the last step's micro-batches. check_inputs: look at the first batch's range (once per fit)."""
    cfg, run, model, dist = st.cfg, st.run, st.model, st.dist
    if apply_unfreeze(model, cfg, st.epoch):
        sync_trainable(st.optimizer, model, cfg)
        progress.message(f"epoch {st.epoch}: unfroze {cfg.unfreeze[st.epoch]}")
    if not st.buffers.intact():  # something replaced a buffer since: guard the ones the model holds now
        st.buffers = BufferGuard(model)
    pairs = ema_pairs(st.ema, model) if st.ema is not None else None  # after the guard: the buffers it holds
    forward_model = compiled(dist.wrap(model), cfg.compile)  # DDP reduces only what is trainable when built
    train_mode(model, cfg, st.epoch)
    sampler = TrainBatches(len(data), cfg.batch_size, cfg.seed, st.epoch, dist.rank, dist.world, st.batch)
    loader_seed = epoch_seed(cfg.seed, st.epoch, stream=1 + dist.rank)
    batches = iter(make_loader(data, sampler, cfg.num_workers, device.type == "cuda", loader_seed))
    telemetry.start_interval(model)
    progress.start_epoch(st.epoch, n_batches, st.batch)
    last_save = (time.monotonic(), st.step)
    micro: list = []
    try:
        while st.batch < n_batches and run.stop is None:
            with st.interrupts.critical():  # the stop button waits for this step (nbtools.train.interrupt)
                micro = []
                for i in range(min(cfg.grad_accum, n_batches - st.batch)):
                    x, y = _to_device(next(batches), device, st, i)
                    x, y = batch_transform(x, y) if batch_transform is not None else (x, y)
                    micro.append((as_input(x, cfg.channels_last), y))
                result = _step(st, forward_model, micro, data, loss_fn, progress, check_inputs, pairs)
                check_inputs = False
                telemetry.record(result)
                if cfg.nan_policy == "raise" and result.bad.item():
                    run.stop = nan_policy_stop(st.step)
                if len(telemetry) == cfg.log_every or st.batch == n_batches or run.stop is not None:
                    end_interval(st, telemetry, progress, micro, loss_fn)
                    last_save = _checkpoint_if_due(st, progress, last_save, n_batches)
    except KeyboardInterrupt:
        if len(telemetry) and not st.interrupts.partial:
            with st.interrupts.critical():  # the steps since the last read become a record
                end_interval(st, telemetry, progress, micro, loss_fn)
        raise
    return micro


def _step(st: TrainState, forward_model, micro: list, data, loss_fn, progress, check_inputs: bool, pairs):
    """One optimizer step on `micro`, then the scheduler, the EMA (`pairs`: its ema_pairs) and the counters."""
    run, model = st.run, st.model
    record_task = check_inputs and "outputs" not in run.task  # once per run: a resume keeps the record
    if check_inputs:  # one host sync, once
        report(run, progress, [input_range(micro[0][0], st.epoch, st.step + 1)])
    args = (forward_model, micro, loss_fn, st.optimizer, st.precision, st.cfg.clip_norm, st.dist, st.buffers)
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
    progress.batches_done(len(micro))
    return result


def _checkpoint_if_due(st: TrainState, progress, last_save: tuple[float, int], n_batches: int):
    """The mid-epoch checkpoint every checkpoint_every_steps / _minutes; returns (time, step) of the last."""
    every, minutes = st.cfg.checkpoint_every_steps, st.cfg.checkpoint_every_minutes
    due = (every and st.step - last_save[1] >= every) or (
        minutes and time.monotonic() - last_save[0] >= 60 * minutes
    )
    if not (st.dist.agree(bool(due)) and st.batch < n_batches and st.run.stop is None):
        return last_save
    report(st.run, progress, [save_checkpoint(st, st.run.run_dir / mid_epoch_name(st.epoch, st.step))])
    return time.monotonic(), st.step


def end_interval(st: TrainState, telemetry, progress, micro: list, loss_fn) -> None:
    """Read the interval's telemetry into run.steps, apply the guards and the step rules."""
    run = st.run
    scale = st.precision.scaler.get_scale() if st.precision.scaler.is_enabled() else None
    record = telemetry.flush(st.epoch, st.step, st.scheduler.get_last_lr(), scale)
    run.steps.append(record)
    progress.interval(record)
    if nothing_to_guard(record, st.precision):  # the common interval, at once
        st.bad_streak, found = 0, []
    else:
        found = _guard(st, record, micro, loss_fn)
    due = run.stop is not None or rules.step_rules_due(len(run.steps))
    report(run, progress, [*found, *(rules.step_findings(run) if due else [])])


def _guard(st: TrainState, record: dict, micro: list, loss_fn) -> list[Finding]:
    """Apply the guards to an interval with skipped steps or under fp16; returns their findings."""
    probe = probe_fp16(record, st.model, micro, loss_fn, st.precision, st.dist)  # None unless fp16 failed
    decision = check_interval(st.run, record, st.precision, st.bad_streak, st.amp_window, fp16_probe=probe)
    st.bad_streak, st.amp_window = decision.bad_streak, decision.amp_window
    if decision.fall_back is not None:
        st.precision.fall_back(decision.fall_back)
    st.run.stop = st.run.stop or decision.stop
    return decision.findings


def end_epoch(st: TrainState, val_loader, loss_fn, run_dir: Path, t_epoch: float) -> list[Finding | None]:
    """Validate, track the best epochs, check early stopping, write the epoch checkpoint and metrics.
    The stop button waits for all of it (nbtools.train.interrupt). Returns findings to report."""
    with st.interrupts.critical():
        return _end_epoch(st, val_loader, loss_fn, run_dir, t_epoch)


def _end_epoch(st: TrainState, val_loader, loss_fn, run_dir: Path, t_epoch: float) -> list[Finding | None]:
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
    st.epoch, st.batch = epoch + 1, 0
    not_written = save_checkpoint(st, run_dir / epoch_name(epoch), prune=True)
    if save:
        run.save()
    return [not_written]
