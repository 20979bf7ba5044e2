"""TensorBoard event files in the run folder, so `%tensorboard --logdir runs` shows a run after the
kernel is gone (optional: without the `tensorboard` package `fit` goes on without them).

Without tensorboard, fit says so when it starts, before any progress bar is drawn: once per process at
INFO (a user who never installed it does not want a warning on every run), and as a warning when the
run folder already holds event files, which then stop at the earlier session.

Written from the records `fit` already makes, never from tensors: each telemetry record (one per log
interval: losses, grad norms total and per group, LR per group, loss scale, skipped steps, weight
drift) and each epoch record (train loss, val_* and ema_val_* metrics), at its global optimizer step.
So TensorBoard costs no host sync.

Across resumes each step shows once. A resumed session opens a new event file that starts with a
purge at step 0 and writes the restored records again (the checkpoint's run.steps and run.history),
then goes on: TensorBoard drops what the earlier files hold from step 0 on (SessionLog.START, and
RustBoard preempts any step not below a new one), so a session killed after its last checkpoint
shows none of the steps it trained after it, and a run begun without tensorboard installed gets its
whole history once it is. Only rank 0 writes (fit passes enabled=dist.is_main).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10  # the writer's flush to the file: a Colab disconnect loses at most this much of it
WRITE_SECONDS = 5  # interval records are handed to the writer in batches this often (and at each epoch end)


@functools.cache
def _tensorboard():
    """(SummaryWriter, Summary), or the ImportError's message when tensorboard is not installed."""
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        return str(e)
    return SummaryWriter, Summary


@functools.cache
def _say_not_installed(why: str) -> None:  # once per process
    log.info("no TensorBoard event files: %s (pip install tensorboard to get them; Colab has it)", why)


def available(run_dir: Path) -> bool:
    """True when tensorboard imports; else says so (see the module docstring) and returns False."""
    found = _tensorboard()
    if not isinstance(found, str):
        return True
    if any(run_dir.glob("events.out.tfevents.*")):
        log.warning(
            "%s holds TensorBoard event files, but tensorboard does not import here (%s): TensorBoard will "
            "show the run up to its earlier session only; pip install tensorboard to keep them going",
            run_dir,
            found,
        )
    else:
        _say_not_installed(found)
    return False


def step_scalars(record: dict) -> dict[str, float | None]:
    """The TensorBoard scalars of one telemetry record (see nbtools.train.telemetry)."""
    out = {
        "train/loss": record["loss"],
        "train/grad_norm": record["grad_norm"],
        "train/grad_norm_max": record["grad_norm_max"],
        "train/skipped_steps": record["skipped"],
        "amp/scale": record["scale"],
    }
    if record["drift"] is not None and record["param_norm"]:
        out["train/weight_drift_rel"] = record["drift"] / record["param_norm"]
    out.update({f"grad_norm/{g}": v for g, v in record["group_grad_norm"].items()})
    out.update({f"lr/{g}": v for g, v in record["lr"].items()})
    return out


def epoch_scalars(record: dict) -> dict[str, float | None]:
    """The TensorBoard scalars of one epoch record: its train loss and every validation metric."""
    out = {"epoch/train_loss": record.get("train_loss"), "epoch/epoch": record["epoch"]}
    for key, value in record.items():
        for prefix in ("ema_val_", "val_"):
            if key.startswith(prefix):
                out[f"{prefix[:-1]}/{key.removeprefix(prefix)}"] = value
                break
    return out


class TensorBoardLog:
    """Event files in `run_dir`, written from fit's records; every method is a no-op when disabled."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled and available(self.run_dir)  # said here: before fit draws a progress bar
        self.writer = None
        self.pending: list[dict] = []  # interval records not yet handed to the writer
        self.written_at = time.monotonic()

    def _open(self):
        if self.writer is None and self.enabled:
            # purge_step=0: this file holds the whole run from here on (see the module docstring)
            self.writer = _tensorboard()[0](log_dir=str(self.run_dir), purge_step=0, flush_secs=FLUSH_SECONDS)
        return self.writer

    def _write(self, scalars: dict, step: int) -> None:
        """The record's finite scalars as one event (one Summary with a value per tag): ~20 us, where
        SummaryWriter.add_scalar, an event per tag, costs ~80 us each, a share of a short step."""
        writer = self._open()
        if writer is None:
            return
        summary = _tensorboard()[1]
        values = [
            summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()
            if isinstance(value, (int, float)) and math.isfinite(value)
        ]
        if values:
            writer._get_file_writer().add_summary(summary(value=values), step)

    def interval(self, record: dict) -> None:
        """Kept, and written with the ones before it every WRITE_SECONDS: an event handed to the
        writer's thread costs ~150 us in a training loop (~20 us alone), and the writer only flushes
        to the file every FLUSH_SECONDS anyway."""
        self.pending.append(record)  # its scalars are made when written
        if time.monotonic() - self.written_at >= WRITE_SECONDS:
            self._write_pending()

    def _write_pending(self) -> None:
        for record in self.pending:
            self._write(step_scalars(record), record["step"])
        self.pending, self.written_at = [], time.monotonic()

    def epoch(self, record: dict) -> None:
        self._write_pending()
        self._write(epoch_scalars(record), record["step"])
        if self.writer is not None:
            self.writer.flush()

    def restored(self, run) -> None:
        """Write a resumed run's records again, in step order (epoch records after their intervals)."""
        for r in sorted(
            [(r["step"], 0, r) for r in run.steps] + [(h["step"], 1, h) for h in run.history],
            key=lambda t: t[:2],
        ):
            (self.interval if r[1] == 0 else self.epoch)(r[2])

    def close(self) -> None:
        self._write_pending()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WithTensorBoard:
    """fit's progress (text or dashboard) that also writes each record it is shown to TensorBoard."""

    def __init__(self, progress, tensorboard: TensorBoardLog):
        self.progress, self.tensorboard = progress, tensorboard

    def interval(self, record: dict) -> None:
        self.tensorboard.interval(record)
        self.progress.interval(record)

    def end_epoch(self, record: dict) -> None:
        self.tensorboard.epoch(record)
        self.progress.end_epoch(record)

    def resumed(self, run) -> None:
        self.tensorboard.restored(run)
        self.progress.resumed(run)

    def close(self) -> None:
        try:
            self.tensorboard.close()
        finally:
            self.progress.close()

    def batches_done(self, n: int) -> None:  # at every step: not through __getattr__'s miss
        self.progress.batches_done(n)

    def __getattr__(self, name):  # start_epoch, finding, message, ...
        return getattr(self.progress, name)
