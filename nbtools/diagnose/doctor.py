"""`nbt.doctor(run)`: every finding of a run, from the Run object or its folder's metrics.json."""

from __future__ import annotations

from pathlib import Path

from nbtools.diagnose import rules
from nbtools.runs import Finding, Run


def _load(run_or_dir):
    if hasattr(run_or_dir, "history") and hasattr(run_or_dir, "steps"):
        return run_or_dir
    if not isinstance(run_or_dir, (str, Path)):
        raise TypeError(
            f"doctor takes a Run (what nbt.fit returns) or a run folder path, got {type(run_or_dir).__name__}"
        )
    return Run.load(run_or_dir)


def doctor(run_or_dir) -> list[Finding]:
    """The findings of a run, each with its evidence and fix; an empty list for a healthy run.

    The rules in nbtools.diagnose.rules are evaluated again over the whole history and telemetry,
    so a finished run gives the findings `fit` raised while it trained (with their final evidence).
    Findings only `fit` could see (the guards' non-finite and AMP findings, the first batch's input
    range) come from the run's saved findings. Order: saved findings first, then new ones.

    >>> for f in nbt.doctor("runs/demo"):   # doctest: +SKIP
    ...     print(f)
    [class-collapse] (epoch 5) epochs 3-5: 100% of validation predictions are class 1 ...
    """
    run = _load(run_or_dir)
    derived = {f.code: f for f in (*rules.step_findings(run), *rules.epoch_findings(run))}
    found = [derived.pop(f.code, f) for f in run.findings]
    return found + list(derived.values())
