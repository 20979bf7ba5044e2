"""The watcher: everything `fit` looks at while it trains, and what it decides from it.

Each optimizer step's result goes to `Watcher.step`: the telemetry keeps it on the device and, once
per log interval, reads the interval into one record of run.steps (nbtools.train.telemetry). The
record goes to the progress (the bar or dashboard, TensorBoard and MLflow behind it), the guards
judge it (nbtools.train.guards), and the doctor's step rules run on run.steps (nbtools.diagnose.rules).
At each epoch end the epoch record and the epoch rules follow. Findings land in run.findings and are
shown as they appear (`record_findings`).

The watcher changes nothing in training: it returns a `Decision` (stop the run, or fall back from
fp16) and the epoch loop applies it. Its own state, the guards' count of bad steps in a row and the
fp16 skip window, is saved in every checkpoint (`state_dict`), so a resumed run counts on.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbtools.diagnose import rules
from nbtools.runs import Finding, Run, Stop
from nbtools.step import Distributed, StepResult
from nbtools.train.guards import check_interval, nan_policy_stop, nothing_to_guard, probe_fp16
from nbtools.train.monitor import epoch_finding
from nbtools.train.optim import group_names
from nbtools.train.telemetry import Telemetry


@dataclass(frozen=True)
class Decision:
    """What the watcher found after a step, for the loop to apply."""

    stop: Stop | None = None  # stop the run
    fall_back: str | None = None  # the evidence, when fp16 is to switch to Precision.fallback_mode now
    interval_ended: bool = False  # a log interval was read (a mid-epoch checkpoint may be due)


class Watcher:
    """Telemetry, guards, the doctor's rules and the progress of one `fit` call, over `run`."""

    def __init__(self, run: Run, progress, dist: Distributed) -> None:
        self.run, self.progress = run, progress
        self.telemetry = Telemetry(group_names(run.config), reduce=dist.mean)
        self.dist = dist
        self.bad_streak = 0  # skipped steps in a row (see guards)
        self.amp_window: list[bool] = []  # fp16 skip flags of the last steps

    def state_dict(self) -> dict:
        return {"bad_streak": self.bad_streak, "amp_window": list(self.amp_window)}

    def load_state_dict(self, state: dict) -> None:
        self.bad_streak, self.amp_window = state["bad_streak"], list(state["amp_window"])

    def record_findings(self, findings: list[Finding | None]) -> None:
        """Record findings in run.findings (a repeated code updates its evidence) and show the new ones."""
        for f in findings:
            if f is not None and self.run.add_finding(f):
                self.progress.finding(f)

    def start_epoch(self, st, n_batches: int) -> None:
        """A new interval over st.model's parameters (its trainable set is fixed within an epoch)."""
        self.telemetry.start_interval(st.model)
        self.progress.start_epoch(st.epoch, n_batches, st.batch)

    def step(self, result: StepResult, st, micro: list, loss_fn, last_batch: bool) -> Decision:
        """After each optimizer step (st counts it already): keep its numbers; at the end of a log
        interval (or of the epoch, or on a stop) read the interval and judge it."""
        self.telemetry.record(result)
        stop = nan_policy_stop(st.step) if st.cfg.nan_policy == "raise" and result.bad.item() else None
        if len(self.telemetry) < st.cfg.log_every and not last_batch and stop is None:
            return Decision()
        found = self.end_interval(st, micro, loss_fn, stopping=stop is not None)
        return Decision(stop or found.stop, found.fall_back, interval_ended=True)

    def end_interval(self, st, micro: list, loss_fn, stopping: bool = False) -> Decision:
        """Read the interval's telemetry into run.steps, apply the guards and (when due) the step rules.
        micro: the interval's last step's micro-batches (the fp16 probe re-runs them)."""
        run, precision = self.run, st.precision
        scale = precision.scaler.get_scale() if precision.scaler.is_enabled() else None
        record = self.telemetry.flush(st.epoch, st.step, st.scheduler.get_last_lr(), scale)
        run.steps.append(record)
        self.progress.interval(record)
        if nothing_to_guard(record, precision):  # the common interval, at once
            self.bad_streak = 0
            decision = Decision(interval_ended=True)
            found: list[Finding] = []
        else:
            probe = probe_fp16(
                record, st.model, micro, loss_fn, precision, self.dist
            )  # None unless fp16 failed
            guard = check_interval(run, record, precision, self.bad_streak, self.amp_window, fp16_probe=probe)
            self.bad_streak, self.amp_window = guard.bad_streak, guard.amp_window
            decision, found = Decision(guard.stop, guard.fall_back, True), guard.findings
        due = stopping or run.stop is not None or decision.stop is not None
        self.record_findings(
            [*found, *(rules.step_findings(run) if due or rules.step_rules_due(len(run.steps)) else [])]
        )
        return decision

    def end_epoch(self, record: dict) -> None:
        """The epoch's record (already in run.history) shown and logged, and the doctor's findings on it
        recorded; before the epoch checkpoint, which then holds them."""
        run = self.run
        self.progress.end_epoch(record)
        self.record_findings(
            [*rules.step_findings(run), *rules.epoch_findings(run), epoch_finding(run.config, record)]
        )
