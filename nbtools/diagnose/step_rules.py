"""The doctor's rules over `run.steps` (one telemetry record per log interval): frozen weights and
exploding gradients. Each takes a Run and returns one Finding (with its status) or None.

- `frozen-weights`: in FROZEN_INTERVALS = 2 consecutive log intervals in which at least one
  optimizer step was taken (not skipped), the parameters moved by at most
  FROZEN_REL_DRIFT = 1e-8 of their norm (fp32 resolution is 1.2e-7: such an update rounds away).
  Drift is measured on the model, never on the EMA copy (which would hide a frozen model). Resolved at
  the first interval after the last frozen stretch in which steps were taken and the weights moved.
- `exploding-gradients`: an interval's largest gradient norm is over EXPLODE_FACTOR = 10 times the
  median of the previous EXPLODE_WINDOW = 20 intervals' mean norms (after EXPLODE_MIN_HISTORY = 3).
  The running median starts again at an epoch in TrainConfig.unfreeze: the norm is then taken over
  more parameters, and a jump at that epoch is the unfreezing, not an explosion.
  Resolved after EXPLODE_CALM = 10 intervals without a spike, at the first of them.
"""

from __future__ import annotations

import statistics
from collections import deque

from nbtools.runs.findings import Finding, status_from

FROZEN_REL_DRIFT, FROZEN_INTERVALS = 1e-8, 2
EXPLODE_FACTOR, EXPLODE_WINDOW, EXPLODE_MIN_HISTORY, EXPLODE_CALM = 10.0, 20, 3, 10


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _lrs(record: dict) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in record.get("lr", {}).items())


def _frozen(r: dict) -> bool:
    taken, norm, drift = r["steps"] - r["skipped"], r["param_norm"], r["drift"]
    return taken > 0 and norm is not None and drift is not None and drift <= FROZEN_REL_DRIFT * norm


def frozen_weights(run) -> Finding | None:
    """`frozen-weights`: FROZEN_INTERVALS intervals with steps taken and drift <= FROZEN_REL_DRIFT x norm."""
    window: list[dict] = []
    hits = []
    for r in run.steps:
        window = [*window, r] if _frozen(r) else []
        if len(window) == FROZEN_INTERVALS:
            hits.append(window)
        elif len(window) > FROZEN_INTERVALS:
            hits[-1] = window
    if not hits:
        return None
    w = hits[0]
    first, last = w[0]["step"] - w[0]["steps"] + 1, w[-1]["step"]
    taken = sum(r["steps"] - r["skipped"] for r in w)
    more = f"; {len(hits) - 1} later stretch(es) too" if len(hits) > 1 else ""
    found = Finding(
        "frozen-weights",
        f"the weights moved {_g(max(r['drift'] for r in w))} at most (param norm {_g(w[-1]['param_norm'])}) over "
        f"steps {first}-{last} although {taken} optimizer steps were taken, not skipped (lr {_lrs(w[-1])}){more}",
        "the optimizer is not changing the model: check that it holds the trainable parameters "
        "(requires_grad, parameter groups), that the LR is not ~0, and that no step gate or GradScaler skips "
        "silently (seed 002). Drift is read on the model, not the EMA copy. "
        "nbt.overfit_batch(model, batch, loss_fn) shows whether the model can learn at all.",
        epoch=w[-1]["epoch"],
        step=last,
    )
    # intervals whose steps were all skipped neither show frozen weights nor moving ones
    return status_from(found, run.steps, lambda r: _frozen(r) or r["steps"] == r["skipped"])


def exploding_gradients(run) -> Finding | None:
    """`exploding-gradients`: an interval max over EXPLODE_FACTOR x the running median of the means."""
    recent: deque[float] = deque(maxlen=EXPLODE_WINDOW)
    spikes, last = [], -1
    unfreeze, epoch = set(run.config.unfreeze), None
    for i, r in enumerate(run.steps):
        if r["epoch"] != epoch and r["epoch"] in unfreeze:
            recent.clear()  # more parameters train from here: their norm is not comparable with before
        epoch, peak = r["epoch"], r["grad_norm_max"]
        if len(recent) >= EXPLODE_MIN_HISTORY and peak is not None:
            med = statistics.median(recent)
            if peak > EXPLODE_FACTOR * med:
                spikes.append((r, peak, med))
                last = i
        if r["grad_norm"] is not None:
            recent.append(r["grad_norm"])
    if not spikes:
        return None
    r, peak, med = spikes[0]
    worst = max(spikes, key=lambda s: s[1] / max(s[2], 1e-300))
    groups = {k: v for k, v in r["group_grad_norm"].items() if v is not None}
    group = f"; largest group there: {max(groups, key=groups.get)}" if len(groups) > 1 else ""
    found = Finding(
        "exploding-gradients",
        f"{len(spikes)} log interval(s) with a gradient-norm spike over {EXPLODE_FACTOR:g}x the running median: "
        f"first in steps up to {r['step']} ({_g(peak)} vs median {_g(med)}), largest "
        f"{worst[1] / max(worst[2], 1e-300):.0f}x up to step {worst[0]['step']}{group}",
        "set clip_norm (e.g. 1.0), lower the LR of the spiking group (group_grad_norm in run.steps, or the "
        "dashboard) or add warmup_epochs; check the inputs for outliers (nbt.validate_dataset). Do not clamp.",
        epoch=r["epoch"],
        step=r["step"],
    )
    calm = run.steps[last + 1 :]
    return found.resolved(calm[0]["epoch"]) if len(calm) >= EXPLODE_CALM else found
