"""The doctor's rules: functions over `run.steps` / `run.history` that name a failure and its fix.

Each rule takes a `Run` (`.steps`, `.history`, `.config`, `.stop`, `.best_epoch` and `.task` are
read) and returns one `Finding` or None. A rule reports the first stretch of the run where its
condition held (and counts later ones), so the findings `fit` raises live equal what `nbt.doctor`
re-derives from metrics.json afterwards. Their thresholds are module constants, documented where
each rule lives (and importable from here, so a notebook can read them):

- nbtools.diagnose.step_rules: `frozen-weights`, `exploding-gradients`
- nbtools.diagnose.term_rules: `loss-term-dominates`, `loss-terms-conflict` (multi-head runs: the
  per-term gradient fields of run.steps, documented there)
- nbtools.diagnose.chance: `lr-too-high` (against the chance level recorded in run.task)
- nbtools.diagnose.epoch_rules: `class-collapse`, `no-learning`, `overfitting`, `stopped-too-early`
- nbtools.diagnose.task_rules: `seg-background-only`, `stopped-too-early` before the model started learning,
  `loss-term-nonfinite` (the loss term that overflowed, from the telemetry's term values)
- nbtools.diagnose.threshold: `threshold`
- `input-out-of-range` is not a rule over the history: nbtools.diagnose.inputs checks the first
  training batch once per `fit` (its thresholds are documented there).

Status: a finding is "open" while its condition still holds at the end of the record, "resolved"
(with the first epoch at which it no longer held) once it passed; each rule's module says when. A
saved open finding whose rule no longer fires at all (stopped-too-early once the run was resumed)
is resolved at the first epoch after it (threshold: at the new best epoch).

The guards' findings (`nonfinite-loss`, `nonfinite-grad`, `amp-skipped-steps`, `amp-overflow`) live
in nbtools.train.guards and are kept in metrics.json; `doctor` reports them from there.
"""

from __future__ import annotations

from collections.abc import Callable

from nbtools.diagnose.chance import (
    LR_CHANCE_FACTOR,
    LR_EARLY_EPOCHS,
    LR_RISE_FACTOR,
    LR_RISE_INTERVALS,
    lr_too_high,
)
from nbtools.diagnose.epoch_rules import (
    COLLAPSE_EPOCHS,
    COLLAPSE_OTHER_RECALL,
    COLLAPSE_SHARE,
    NO_LEARN_AUC_BAND,
    NO_LEARN_EPOCHS,
    NO_LEARN_REL_DROP,
    OVERFIT_EPOCHS,
    OVERFIT_RISE,
    STOP_TREND_REL,
    class_collapse,
    no_learning,
    overfitting,
)
from nbtools.diagnose.step_rules import (
    EXPLODE_CALM,
    EXPLODE_FACTOR,
    EXPLODE_MIN_HISTORY,
    EXPLODE_WINDOW,
    FROZEN_INTERVALS,
    FROZEN_REL_DRIFT,
    exploding_gradients,
    frozen_weights,
)
from nbtools.diagnose.task_rules import (
    BG_DICE,
    BG_EPOCHS,
    BG_LOSS_DROP,
    WAKE_ABS,
    WAKE_REL,
    loss_term_nonfinite,
    seg_background_only,
    stopped_too_early,
)
from nbtools.diagnose.term_rules import (
    CONFLICT_COS,
    CONFLICT_SHARE,
    CONFLICT_WINDOW,
    DOMINATE_FACTOR,
    DOMINATE_FITTED,
    DOMINATE_INTERVALS,
    loss_term_dominates,
    loss_terms_conflict,
)
from nbtools.diagnose.threshold import THRESHOLD_F1_GAIN, threshold
from nbtools.runs.findings import Finding

__all__ = [
    "BG_DICE",
    "BG_EPOCHS",
    "BG_LOSS_DROP",
    "COLLAPSE_EPOCHS",
    "COLLAPSE_OTHER_RECALL",
    "COLLAPSE_SHARE",
    "CONFLICT_COS",
    "CONFLICT_SHARE",
    "CONFLICT_WINDOW",
    "DOMINATE_FACTOR",
    "DOMINATE_FITTED",
    "DOMINATE_INTERVALS",
    "EPOCH_RULES",
    "EXPLODE_CALM",
    "EXPLODE_FACTOR",
    "EXPLODE_MIN_HISTORY",
    "EXPLODE_WINDOW",
    "FROZEN_INTERVALS",
    "FROZEN_REL_DRIFT",
    "LR_CHANCE_FACTOR",
    "LR_EARLY_EPOCHS",
    "LR_RISE_FACTOR",
    "LR_RISE_INTERVALS",
    "NO_LEARN_AUC_BAND",
    "NO_LEARN_EPOCHS",
    "NO_LEARN_REL_DROP",
    "OVERFIT_EPOCHS",
    "OVERFIT_RISE",
    "STEP_RULES",
    "STEP_RULES_DENSE",
    "STOP_TREND_REL",
    "THRESHOLD_F1_GAIN",
    "WAKE_ABS",
    "WAKE_REL",
    "class_collapse",
    "epoch_findings",
    "exploding_gradients",
    "frozen_weights",
    "loss_term_dominates",
    "loss_term_nonfinite",
    "loss_terms_conflict",
    "lr_too_high",
    "no_learning",
    "overfitting",
    "seg_background_only",
    "step_findings",
    "step_rules_due",
    "stopped_too_early",
    "threshold",
]

STEP_RULES: tuple[Callable, ...] = (
    frozen_weights,
    exploding_gradients,
    lr_too_high,
    loss_term_dominates,
    loss_terms_conflict,
    loss_term_nonfinite,
)
STEP_RULES_DENSE = 500  # records of run.steps up to which fit runs STEP_RULES at every log interval
EPOCH_RULES: tuple[Callable, ...] = (
    class_collapse,
    no_learning,
    overfitting,
    stopped_too_early,
    threshold,
    seg_background_only,
)
CODES = {
    frozen_weights: "frozen-weights",
    exploding_gradients: "exploding-gradients",
    lr_too_high: "lr-too-high",
    loss_term_dominates: "loss-term-dominates",
    loss_terms_conflict: "loss-terms-conflict",
    loss_term_nonfinite: "loss-term-nonfinite",
    seg_background_only: "seg-background-only",
    class_collapse: "class-collapse",
    no_learning: "no-learning",
    overfitting: "overfitting",
    stopped_too_early: "stopped-too-early",
    threshold: "threshold",
}


def _passed(run, code: str) -> Finding | None:
    """The saved open finding of a rule that no longer fires, resolved (see the module docstring)."""
    saved = next((f for f in run.findings if f.code == code and f.is_open), None)
    if saved is None:
        return None
    if code == "threshold":
        return saved.resolved(run.best_epoch)
    later = [h["epoch"] for h in run.history if saved.epoch is None or h["epoch"] > saved.epoch]
    return saved.resolved(later[0] if later else None)


def _findings(run, rules: tuple[Callable, ...]) -> list[Finding]:
    found = ((rule(run) or _passed(run, CODES[rule])) for rule in rules)
    return [f for f in found if f is not None]


def step_findings(run) -> list[Finding]:
    """The rules over run.steps (fit calls them at log intervals, see `step_rules_due`), with their status."""
    return _findings(run, STEP_RULES)


def step_rules_due(records: int) -> bool:
    """Whether fit runs the step rules at the log interval that made run.steps `records` long.

    A pass reads the whole record, so passes at every interval would cost a long run more and more
    (bench/README.md). So: at every interval up to STEP_RULES_DENSE records, then at every 2nd up to
    twice that, every 4th up to four times that, and so on: a pass then reads at most STEP_RULES_DENSE
    records per interval since the last (a bounded cost however long the run), and a finding waits
    fewer than 2 x records / STEP_RULES_DENSE intervals. The rules are functions of the whole record, so a later
    pass misses nothing; fit also runs them at every epoch end and when the run stops."""
    return records % (1 << (records // STEP_RULES_DENSE).bit_length()) == 0


def epoch_findings(run) -> list[Finding]:
    """The rules over run.history (fit calls them after each epoch), with their status."""
    return _findings(run, EPOCH_RULES)
