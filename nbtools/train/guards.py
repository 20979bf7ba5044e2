"""Guards read at each log interval: skipped steps, runs of non-finite steps, and the fp16 monitor.

Nothing here clamps or replaces a value. A non-finite step was already skipped on the device (weights,
optimizer state and BatchNorm statistics untouched); here it is counted, reported with its step,
and, when it keeps happening, the run is stopped with what to look at, or fp16 falls back to bf16
or fp32.

Thresholds:
- `cfg.max_bad_steps` skipped steps in a row stop the run (checked at each log interval, so the stop
  may come up to `log_every - 1` steps later; those steps were skipped too and changed nothing).
- fp16 only: if at least half of the last AMP_WINDOW optimizer steps were skipped by overflow, or the
  weights did not move over an interval in which steps were taken, the scaler is not converging
  (seed 002's frozen model). With `cfg.amp_fallback` the run switches to Precision.fallback_mode
  (bf16 where the device really has it, else fp32); without it, it stops.
  GradScaler's normal calibration skips a handful of steps at the start and about one per 2000
  after, far below this rate. Either way the finding `amp-skipped-steps` is recorded. bf16 and fp32
  never use a scaler, so the monitor does not apply to them.
- fp16 only, forward overflow: when an interval ends on a step whose loss was non-finite, the loop
  asks `probe_fp16` to re-run that step's micro-batches (on a copy of the model) in fp16 and in the
  fallback precision (nbtools.diagnose.fp16_range). Non-finite in fp16 but finite there is fp16's
  range (65504), not a NaN: with `cfg.amp_fallback` the run switches to the fallback (bf16 where
  the device really has it, else fp32: Precision.fallback_mode) and continues; without it, it stops
  (code "amp"). Either way the finding `amp-overflow` names the first module that overflowed, and
  no `nonfinite-loss` advice (LR, clipping) is given for it. A step that is non-finite in the
  fallback precision too is a real NaN and takes the path above. Only intervals that end on a bad
  step are probed (only those can stop the run; a run of bad steps that a good one ends is counted
  and reported as before), so a healthy run pays nothing: no host sync, no re-run, no batch kept
  beyond the last step's.
- When the run stops on non-finite steps, `locate_first_nonfinite` re-runs the last bad step's batches
  through nbtools.diagnose.nonfinite and names the first non-finite module in the stop message and
  in the `nonfinite-loss` / `nonfinite-grad` finding.

The guards decide; `fit` acts. `check_interval` and `locate_first_nonfinite` change nothing: they
return what they found and what to do (a `GuardDecision`; a new Stop and findings), and the loop
applies it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from nbtools.diagnose.fp16_range import Fp16Range, fp16_range_check
from nbtools.diagnose.nonfinite import nonfinite_report
from nbtools.runs import Finding, Run, Stop
from nbtools.step import SINGLE_PROCESS, Precision

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
    fall_back: str | None = None  # the evidence, when fp16 is to switch to Precision.fallback_mode now
    stop: Stop | None = None  # set when the run is to stop


def nothing_to_guard(record: dict, precision: Precision) -> bool:
    """The common interval: no step skipped, and not fp16 (whose monitor looks at every interval).
    `check_interval` would find nothing, and the bad-step streak is 0."""
    return not record["skipped"] and precision.mode != "fp16"


def _trailing_skips(record: dict) -> int:
    n, last = 0, record["step"]
    skipped = set(record["skipped_steps"])
    while n < record["steps"] and last - n in skipped:
        n += 1
    return n


def probe_fp16(
    record: dict, model: nn.Module, micro: list, loss_fn: Callable, precision: Precision, dist=SINGLE_PROCESS
) -> Fp16Range | None:
    """Under fp16, when the interval of `record` ended on a step with a non-finite loss: re-run that
    step's micro-batches `micro` in fp16 and in precision.fallback_mode (on a copy of the model).
    None otherwise (no re-run). Under torchrun every rank re-runs its own batches, and the verdict
    is the same on all: "range" if a rank saw it and no rank saw a real NaN. Changes nothing."""
    last_bad = record["step"] in record["skipped_steps"] and not math.isfinite(record["loss_last"])
    if precision.mode != "fp16" or not record["nonfinite_loss"] or not last_bad:
        return None
    found = dist.gather_objects(fp16_range_check(model, micro, loss_fn, precision.fallback_mode))
    real = next((r for r in found if r.verdict == "real"), None)
    return real or next((r for r in found if r.verdict == "range"), found[0])


def _fp16_range_decision(
    run: Run, record: dict, probe: Fp16Range, fallback_mode: str, bad_streak: int, amp_window: list[bool]
) -> GuardDecision:
    first, step = record["step"] - record["steps"] + 1, record["step"]
    evidence = (
        f"{record['nonfinite_loss']} of the {record['steps']} steps {first}-{step} had a non-finite loss under "
        f"fp16, and step {step}'s batch re-run in {probe.reference} is finite: fp16's range (max 65504) "
        f"overflowed; first under fp16: {probe}"
    )
    keep = (
        "The LR and the loss are not the cause (do not lower the LR, clip or clamp); to train in fp16, bring "
        "the values into its range: normalize the inputs (nbt.validate_dataset shows their range) and look at "
        "what feeds the module named above (a missing normalization, a large scale), or use precision='bf16' "
        "on an Ampere or newer GPU (A100, L4)."
    )
    at = {"epoch": record["epoch"], "step": step}
    if run.config.amp_fallback:
        finding = Finding(
            "amp-overflow",
            f"{evidence}; switched to {fallback_mode} at step {step}",
            f"nothing needed now: the run continues in {fallback_mode}. {keep}",
            **at,
        )
        return GuardDecision(0, [], [finding], fall_back=evidence)
    finding = Finding(
        "amp-overflow",
        f"{evidence}; the run stopped at step {step} (amp_fallback=False)",
        f"resume with amp_fallback=True (fp16 switches to {fallback_mode} by itself) or precision="
        f"'{fallback_mode}'. {keep}",
        **at,
    )
    where = " in the forward pass" if probe.report is not None and probe.report.where == "forward" else ""
    stop = Stop(
        "amp",
        f"fp16 overflow{where}: {evidence}. Set amp_fallback=True or precision='{fallback_mode}'"
        " (or bring the values into fp16's range); lowering the LR or clipping will not help.",
    )
    return GuardDecision(bad_streak, amp_window, [finding], stop=stop)


def check_interval(
    run: Run,
    record: dict,
    precision: Precision,
    bad_streak: int,
    amp_window: list[bool],
    *,
    fp16_probe: Fp16Range | None = None,
) -> GuardDecision:
    """Apply the guards to one telemetry record (already in run.steps) of a run in `precision`.
    Reads run.config, run.steps and the precision's mode and fallback_mode; changes nothing.
    fp16_probe: what `probe_fp16` found for this interval."""
    if nothing_to_guard(record, precision):
        return GuardDecision(0, amp_window)
    cfg, fp16, fallback_mode = run.config, precision.mode == "fp16", precision.fallback_mode
    findings: list[Finding] = []
    # fp16 overflow skips are the scaler's business (the AMP rule below), not a run of bad steps.
    overflow_only = fp16 and record["nonfinite_loss"] == 0
    trailing = 0 if overflow_only else _trailing_skips(record)
    bad_streak = bad_streak + trailing if trailing == record["steps"] else trailing
    if fp16 and fp16_probe is not None and fp16_probe.verdict == "range":
        return _fp16_range_decision(run, record, fp16_probe, fallback_mode, bad_streak, amp_window)
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
                        f"{evidence}; switched to {fallback_mode} at step {record['step']}",
                        f"nothing needed: the run continues in {fallback_mode}. To keep mixed precision use "
                        "bf16 on an Ampere or newer GPU (A100, L4); fp16 overflow means values beyond 65504, "
                        "so check the input range (nbt.validate_dataset) and normalization.",
                        epoch=record["epoch"],
                        step=record["step"],
                    )
                )
                return GuardDecision(0, [], findings, fall_back=evidence)
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
                "amp",
                f"non-finite fp16 steps: {evidence}; set amp_fallback=True or precision='{fallback_mode}'",
            )
            return GuardDecision(bad_streak, amp_window, findings, stop=stop)
    stop = None
    if bad_streak >= cfg.max_bad_steps:
        first = record["step"] - bad_streak + 1
        stop = Stop(
            "nonfinite",
            f"non-finite loss or gradients for {bad_streak} optimizer steps in a row (steps {first}-"
            f"{record['step']}, max_bad_steps={cfg.max_bad_steps}); no checkpoint was written of a non-finite state. "
            f"{_NONFINITE_FIX}",
        )
    return GuardDecision(bad_streak, amp_window, findings, stop=stop)


def nan_policy_stop(step: int) -> Stop:
    return Stop("nonfinite", f"non-finite loss or gradient at step {step} (nan_policy='raise')")


def locate_first_nonfinite(
    run: Run, model: nn.Module, batches: list, loss_fn: Callable, precision: Precision
) -> tuple[Stop, list[Finding]] | None:
    """After a stop on non-finite steps: the stop and the non-finite findings again, naming the first
    non-finite module on the last (bad) step's micro-batches; None unless the stop is "nonfinite" with
    a non-finite finding (the "amp" stops are fp16's: scaler overflow, which an fp32 re-run cannot
    show, or a forward overflow, already located). Works on a copy of the model; changes nothing."""
    found = [f for f in run.findings if f.code in _NONFINITE_CODES]
    if run.stop is None or run.stop.code != "nonfinite" or not found:
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
