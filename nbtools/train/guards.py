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
- When the run stops on non-finite steps, `name_first_nonfinite` re-runs the last bad step's batches
  through nbtools.diagnose.nonfinite and adds the first non-finite module to the stop message and
  to the `nonfinite-loss` / `nonfinite-grad` finding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from torch import nn

from nbtools.diagnose.findings import Finding
from nbtools.diagnose.nonfinite import nonfinite_report

AMP_WINDOW = 50

_NONFINITE_FIX = (
    "weights and optimizer state were left untouched. If it repeats: nbt.validate_dataset(train_data) for "
    "NaN/Inf/extreme inputs, nbt.find_nonfinite(model, batch, loss_fn) names the first module that goes "
    "non-finite; then lower that group's LR or set clip_norm. Do not clamp the loss."
)


def _trailing_skips(record: dict) -> int:
    n, last = 0, record["step"]
    skipped = set(record["skipped_steps"])
    while n < record["steps"] and last - n in skipped:
        n += 1
    return n


def check_interval(run, st, record: dict) -> Iterator[tuple[Finding, bool]]:
    """Apply the guards to one telemetry record; yields (finding, is_new). May set run.stopped."""
    cfg, fp16 = st.cfg, st.precision.mode == "fp16"
    # fp16 overflow skips are the scaler's business (the AMP rule below), not a run of bad steps.
    overflow_only = fp16 and record["nonfinite_loss"] == 0
    trailing = 0 if overflow_only else _trailing_skips(record)
    st.bad_streak = st.bad_streak + trailing if trailing == record["steps"] else trailing
    if record["skipped"] and not overflow_only:
        total = sum(r["skipped"] for r in run.steps)
        what = "loss" if record["nonfinite_loss"] else "gradients"
        f = Finding(
            f"nonfinite-{'loss' if record['nonfinite_loss'] else 'grad'}",
            f"{total} optimizer steps skipped for non-finite {what} so far; latest at steps "
            f"{', '.join(map(str, record['skipped_steps'][-5:]))}",
            _NONFINITE_FIX,
            epoch=record["epoch"],
            step=record["step"],
        )
        yield f, run.add_finding(f)
    if fp16:
        first = record["step"] - record["steps"] + 1
        flags = [s in record["skipped_steps"] for s in range(first, record["step"] + 1)]
        st.amp_window = (st.amp_window + flags)[-AMP_WINDOW:]
        skips = sum(st.amp_window)
        frozen = record["drift"] == 0.0 and record["skipped"] < record["steps"]
        if skips * 2 >= AMP_WINDOW or frozen:
            evidence = (
                f"fp16 GradScaler skipped {skips} of the last {len(st.amp_window)} steps (scale {record['scale']})"
                if not frozen
                else f"weights did not move over steps {first}-{record['step']} under fp16"
            )
            if cfg.amp_fallback:
                st.precision.fall_back_to_fp32(evidence)
                st.amp_window, st.bad_streak = [], 0
                f = Finding(
                    "amp-skipped-steps",
                    f"{evidence}; switched to fp32 at step {record['step']}",
                    "nothing needed: the run continues in fp32. To keep mixed precision use bf16 on an Ampere "
                    "or newer GPU (A100, L4); fp16 overflow means values beyond 65504, so check the input "
                    "range (nbt.validate_dataset) and normalization.",
                    epoch=record["epoch"],
                    step=record["step"],
                )
                yield f, run.add_finding(f)
                return
            run.stopped = (
                f"non-finite fp16 steps: {evidence}; set amp_fallback=True or precision='fp32'/'bf16'"
            )
            f = Finding(
                "amp-skipped-steps",
                f"{evidence}; the run stopped at step {record['step']} (amp_fallback=False)",
                "resume with amp_fallback=True (fp16 falls back to fp32 by itself), or precision='bf16' on an "
                "Ampere or newer GPU, or 'fp32'; check the input range (nbt.validate_dataset).",
                epoch=record["epoch"],
                step=record["step"],
            )
            yield f, run.add_finding(f)
            return
    if st.bad_streak >= cfg.max_bad_steps:
        first = record["step"] - st.bad_streak + 1
        run.stopped = (
            f"non-finite loss or gradients for {st.bad_streak} optimizer steps in a row (steps {first}-{record['step']}, "
            f"max_bad_steps={cfg.max_bad_steps}); the checkpoints before them are intact. {_NONFINITE_FIX}"
        )


def name_first_nonfinite(run, model: nn.Module, batches: list, loss_fn: Callable, precision) -> None:
    """After a stop on non-finite steps: find the first non-finite module on the last (bad) step's
    micro-batches and add it to run.stopped and the non-finite finding. Works on a copy of the model;
    nothing of the run changes but the two messages. Not for the fp16 monitor's stop (no finding of
    ours: that is scaler overflow, which an fp32 re-run cannot show)."""
    found = [f for f in run.findings if f.code in ("nonfinite-loss", "nonfinite-grad")]
    if not found:
        return
    dtype = precision.dtype if precision.mode != "fp32" else None
    reports = (nonfinite_report(model, b, loss_fn, autocast_dtype=dtype) for b in batches)
    report = next((r for r in reports if r), None)
    text = (
        str(report)
        if report
        else "none on re-running the last step's batches alone (it needs the accumulated gradients, or "
        "is not deterministic)"
    )
    run.stopped = f"{run.stopped} First non-finite on the last bad step's batch: {text}"
    for f in found:
        run.add_finding(dataclasses.replace(f, message=f"{f.message}; first non-finite: {text}"))
