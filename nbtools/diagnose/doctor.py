"""`nbt.doctor(run)`: every finding of a run, from the Run object or its folder's metrics.json."""

from __future__ import annotations

from pathlib import Path

from nbtools.diagnose import rules
from nbtools.runs import Finding, Run, open_first


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
    range) come from the run's saved findings. Each has its status: "open" (it still holds at the
    end of the record) or "resolved" at an epoch (it passed). Order: the open ones first, then the
    resolved ones; within each, saved findings first, then new ones.

    >>> for f in nbt.doctor("runs/demo"):   # doctest: +SKIP
    ...     print(f)
    [overfitting] (epoch 9) val loss rose from 0.21 (epoch 5) to 0.35 (epoch 9) ...
    [class-collapse] (epoch 3; resolved at epoch 4) epochs 1-3: 100% of validation predictions are class 1 ...
    """
    run = _load(run_or_dir)
    derived = {f.code: f for f in (*rules.step_findings(run), *rules.epoch_findings(run))}
    found = [derived.pop(f.code, f) for f in run.findings]
    return open_first(found + list(derived.values()))
