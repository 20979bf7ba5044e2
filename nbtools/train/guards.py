"""Guards read at each log interval: skipped steps, runs of non-finite steps, and the fp16 monitor.

Nothing here clamps or replaces a value. A non-finite step was already skipped on the device (weights,
optimizer state and BatchNorm statistics untouched); here it is counted, reported with its step,
and, when it keeps happening, the run is stopped with what to look at, or fp16 falls back to fp32.

Thresholds:
- `cfg.max_bad_steps` skipped steps in a row stop the run (checked at each log interval, so the stop
  may come up to `log_every - 1` steps later; those steps were skipped too and changed nothing).
- fp16 only: if at least half of the last AMP_WINDOW optimizer steps were skipped by overflow, or the
  weights did not move over an interval in which steps were taken, the scaler is not converging
  (seed 002's frozen model). With `cfg.amp_fallback` the run switches to fp32; without it, it stops.
  GradScaler's normal calibration skips a handful of steps at the start and about one per 2000
  after, far below this rate. Either way the finding `amp-skipped-steps` is recorded. bf16 and fp32
  never use a scaler, so the monitor does not apply to them.
- When the run stops on non-finite steps, `locate_first_nonfinite` re-runs the last bad step's batches
  through nbtools.diagnose.nonfinite and names the first non-finite module in the stop message and
  in the `nonfinite-loss` / `nonfinite-grad` finding.

The guards decide; `fit` acts. `check_interval` and `locate_first_nonfinite` change nothing: they
return what they found and what to do (a `GuardDecision`; a new Stop and findings), and the loop
applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from nbtools.diagnose.nonfinite import nonfinite_report
from nbtools.runs import Finding, Run, Stop
from nbtools.step import Precision

AMP_WINDOW = 50

_NONFINITE_FIX = (
    "weights and optimizer state were left untouched. If it repeats: nbt.validate_dataset(train_data) for "
    "NaN/Inf/extreme inputs, nbt.find_nonfinite(model, batch, loss_fn) names the first module that goes "
    "non-finite; then lower that group's LR or set clip_norm. Do not clamp the loss."
)
_NONFINITE_CODES = ("nonfinite-loss", "nonfinite-grad")


@dataclass(frozen=True)
class GuardDecision:
    """What the guards found at one log interval, and what the loop is to do about it."""

    bad_streak: int  # skipped steps in a row, up to this interval's last step
    amp_window: list[bool]  # fp16 skip flags of the last AMP_WINDOW optimizer steps
    findings: list[Finding] = dataclasses.field(default_factory=list)
    fall_back_to_fp32: str | None = None  # the evidence, when fp16 is to switch to fp32 now
    stop: Stop | None = None  # set when the run is to stop


def _trailing_skips(record: dict) -> int:
    n, last = 0, record["step"]
    skipped = set(record["skipped_steps"])
    while n < record["steps"] and last - n in skipped:
        n += 1
    return n


def check_interval(
    run: Run, record: dict, precision_mode: str, bad_streak: int, amp_window: list[bool]
) -> GuardDecision:
    """Apply the guards to one telemetry record (already in run.steps). Reads run.config and
    run.steps; changes nothing."""
    cfg, fp16 = run.config, precision_mode == "fp16"
    findings: list[Finding] = []
    # fp16 overflow skips are the scaler's business (the AMP rule below), not a run of bad steps.
    overflow_only = fp16 and record["nonfinite_loss"] == 0
    trailing = 0 if overflow_only else _trailing_skips(record)
    bad_streak = bad_streak + trailing if trailing == record["steps"] else trailing
    if record["skipped"] and not overflow_only:
        total = sum(r["skipped"] for r in run.steps)
        what = "loss" if record["nonfinite_loss"] else "gradients"
        findings.append(
            Finding(
                f"nonfinite-{'loss' if record['nonfinite_loss'] else 'grad'}",
                f"{total} optimizer steps skipped for non-finite {what} so far; latest at steps "
                f"{', '.join(map(str, record['skipped_steps'][-5:]))}",
                _NONFINITE_FIX,
                epoch=record["epoch"],
                step=record["step"],
            )
        )
    if fp16:
        first = record["step"] - record["steps"] + 1
        flags = [s in record["skipped_steps"] for s in range(first, record["step"] + 1)]
        amp_window = (amp_window + flags)[-AMP_WINDOW:]
        skips = sum(amp_window)
        frozen = record["drift"] == 0.0 and record["skipped"] < record["steps"]
        if skips * 2 >= AMP_WINDOW or frozen:
            evidence = (
                f"fp16 GradScaler skipped {skips} of the last {len(amp_window)} steps (scale {record['scale']})"
                if not frozen
                else f"weights did not move over steps {first}-{record['step']} under fp16"
            )
            if cfg.amp_fallback:
                findings.append(
                    Finding(
                        "amp-skipped-steps",
                        f"{evidence}; switched to fp32 at step {record['step']}",
                        "nothing needed: the run continues in fp32. To keep mixed precision use bf16 on an "
                        "Ampere or newer GPU (A100, L4); fp16 overflow means values beyond 65504, so check "
                        "the input range (nbt.validate_dataset) and normalization.",
                        epoch=record["epoch"],
                        step=record["step"],
                    )
                )
                return GuardDecision(0, [], findings, fall_back_to_fp32=evidence)
            findings.append(
                Finding(
                    "amp-skipped-steps",
                    f"{evidence}; the run stopped at step {record['step']} (amp_fallback=False)",
                    "resume with amp_fallback=True (fp16 falls back to fp32 by itself), or precision='bf16' on "
                    "an Ampere or newer GPU, or 'fp32'; check the input range (nbt.validate_dataset).",
                    epoch=record["epoch"],
                    step=record["step"],
                )
            )
            stop = Stop(
                "amp", f"non-finite fp16 steps: {evidence}; set amp_fallback=True or precision='fp32'/'bf16'"
            )
            return GuardDecision(bad_streak, amp_window, findings, stop=stop)
    stop = None
    if bad_streak >= cfg.max_bad_steps:
        first = record["step"] - bad_streak + 1
        stop = Stop(
            "nonfinite",
            f"non-finite loss or gradients for {bad_streak} optimizer steps in a row (steps {first}-"
            f"{record['step']}, max_bad_steps={cfg.max_bad_steps}); the checkpoints before them are intact. "
            f"{_NONFINITE_FIX}",
        )
    return GuardDecision(bad_streak, amp_window, findings, stop=stop)


def nan_policy_stop(step: int) -> Stop:
    return Stop("nonfinite", f"non-finite loss or gradient at step {step} (nan_policy='raise')")


def locate_first_nonfinite(
    run: Run, model: nn.Module, batches: list, loss_fn: Callable, precision: Precision
) -> tuple[Stop, list[Finding]] | None:
    """After a stop on non-finite steps: the stop and the non-finite findings again, naming the first
    non-finite module on the last (bad) step's micro-batches; None when there is no non-finite finding
    (the fp16 monitor's stop is scaler overflow, which an fp32 re-run cannot show). Works on a copy of
    the model; changes nothing."""
    found = [f for f in run.findings if f.code in _NONFINITE_CODES]
    if run.stop is None or not found:
        return None
    dtype = precision.dtype if precision.mode != "fp32" else None
    reports = (nonfinite_report(model, b, loss_fn, autocast_dtype=dtype) for b in batches)
    report = next((r for r in reports if r), None)
    text = (
        str(report)
        if report
        else "none on re-running the last step's batches alone (it needs the accumulated gradients, or "
        "is not deterministic)"
    )
    stop = Stop(run.stop.code, f"{run.stop.message} First non-finite on the last bad step's batch: {text}")
    return stop, [dataclasses.replace(f, message=f"{f.message}; first non-finite: {text}") for f in found]
