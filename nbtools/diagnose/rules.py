"""The doctor's rules: functions over `run.steps` / `run.history` that name a failure and its fix.

Each rule takes a `Run` (only `.steps`, `.history`, `.config` and `.stop` are read) and returns
one `Finding` or None. A rule reports the first stretch of the run where its condition held (and
counts later ones), so the findings `fit` raises live equal what `nbt.doctor` re-derives from
metrics.json afterwards. Thresholds (module constants, so a notebook can read them):

- `frozen-weights`: in FROZEN_INTERVALS = 2 consecutive log intervals in which at least one
  optimizer step was taken (not skipped), the parameters moved by at most
  FROZEN_REL_DRIFT = 1e-8 of their norm (fp32 resolution is 1.2e-7: such an update rounds away).
  Drift is measured on the model, never on the EMA copy (seed 002).
- `exploding-gradients`: an interval's largest gradient norm is over EXPLODE_FACTOR = 10 times the
  median of the previous EXPLODE_WINDOW = 20 intervals' mean norms (after EXPLODE_MIN_HISTORY = 3).
- `lr-too-high`: within the first LR_EARLY_EPOCHS = 3 epochs, LR_RISE_INTERVALS = 2 log intervals
  have a mean train loss above LR_RISE_FACTOR = 2 times the first interval's.
- `class-collapse`: for COLLAPSE_EPOCHS = 3 consecutive epochs (fewer if the run is shorter), one
  class takes at least COLLAPSE_SHARE = 98 % of the validation predictions while the samples of the
  other classes are recalled at most COLLAPSE_OTHER_RECALL = 5 % (seed 000: recall 99 % at a
  precision equal to the base rate = "predict positive always").
- `no-learning`: for NO_LEARN_EPOCHS = 5 consecutive epochs the train loss fell by less than
  NO_LEARN_REL_DROP = 2 % of its value at the window's start, and validation stayed at chance:
  |AUC - 0.5| <= NO_LEARN_AUC_BAND = 0.1 (without an AUC: accuracy <= the majority share + 0.02).
- `overfitting`: the validation loss stayed at least OVERFIT_RISE = 10 % above its minimum for
  OVERFIT_EPOCHS = 3 consecutive epochs while the train loss kept falling below its value there.
- `stopped-too-early`: early stopping ended the run while the least-squares trend of the monitored
  metric over the last `patience` epochs (at least 3) still improved it by more than
  max(min_delta, STOP_TREND_REL = 1 % of its mean), or at the first epoch `min_epochs` allowed
  (patience ran out before the model had the epochs min_epochs was meant to give it; seed 001).
- `input-out-of-range` is not a rule over the history: nbtools.diagnose.inputs checks the first
  training batch once per `fit` (its thresholds are documented there).

The guards' findings (`nonfinite-loss`, `nonfinite-grad`, `amp-skipped-steps`) live in
nbtools.train.guards and are kept in metrics.json; `doctor` reports them from there.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

from nbtools.runs import Finding

FROZEN_REL_DRIFT, FROZEN_INTERVALS = 1e-8, 2
EXPLODE_FACTOR, EXPLODE_WINDOW, EXPLODE_MIN_HISTORY = 10.0, 20, 3
LR_EARLY_EPOCHS, LR_RISE_FACTOR, LR_RISE_INTERVALS = 3, 2.0, 2
COLLAPSE_SHARE, COLLAPSE_OTHER_RECALL, COLLAPSE_EPOCHS = 0.98, 0.05, 3
NO_LEARN_EPOCHS, NO_LEARN_REL_DROP, NO_LEARN_AUC_BAND = 5, 0.02, 0.1
OVERFIT_RISE, OVERFIT_EPOCHS = 0.10, 3
STOP_TREND_REL = 0.01


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _lrs(record: dict) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in record.get("lr", {}).items())


def frozen_weights(run) -> Finding | None:
    """`frozen-weights`: FROZEN_INTERVALS intervals with steps taken and drift <= FROZEN_REL_DRIFT x norm."""
    window: list[dict] = []
    hits = []
    for r in run.steps:
        taken, norm, drift = r["steps"] - r["skipped"], r["param_norm"], r["drift"]
        frozen = taken > 0 and norm is not None and drift is not None and drift <= FROZEN_REL_DRIFT * norm
        window = [*window, r] if frozen else []
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
    return Finding(
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


def exploding_gradients(run) -> Finding | None:
    """`exploding-gradients`: an interval max over EXPLODE_FACTOR x the running median of the means."""
    recent: deque[float] = deque(maxlen=EXPLODE_WINDOW)
    spikes = []
    for r in run.steps:
        peak = r["grad_norm_max"]
        if len(recent) >= EXPLODE_MIN_HISTORY and peak is not None:
            med = statistics.median(recent)
            if peak > EXPLODE_FACTOR * med:
                spikes.append((r, peak, med))
        if r["grad_norm"] is not None:
            recent.append(r["grad_norm"])
    if not spikes:
        return None
    r, peak, med = spikes[0]
    worst = max(spikes, key=lambda s: s[1] / max(s[2], 1e-300))
    groups = {k: v for k, v in r["group_grad_norm"].items() if v is not None}
    group = f"; largest group there: {max(groups, key=groups.get)}" if len(groups) > 1 else ""
    return Finding(
        "exploding-gradients",
        f"{len(spikes)} log interval(s) with a gradient-norm spike over {EXPLODE_FACTOR:g}x the running median: "
        f"first in steps up to {r['step']} ({_g(peak)} vs median {_g(med)}), largest "
        f"{worst[1] / max(worst[2], 1e-300):.0f}x up to step {worst[0]['step']}{group}",
        "set clip_norm (e.g. 1.0), lower the LR of the spiking group (group_grad_norm in run.steps, or the "
        "dashboard) or add warmup_epochs; check the inputs for outliers (nbt.validate_dataset). Do not clamp.",
        epoch=r["epoch"],
        step=r["step"],
    )


def lr_too_high(run) -> Finding | None:
    """`lr-too-high`: LR_RISE_INTERVALS early intervals above LR_RISE_FACTOR x the first one's loss."""
    early = [r for r in run.steps if r["epoch"] <= LR_EARLY_EPOCHS]
    start = next((r for r in early if r["loss"] is not None), None)
    if start is None or start["loss"] <= 0:
        return None
    rising = [r for r in early if r["loss"] is not None and r["loss"] > LR_RISE_FACTOR * start["loss"]]
    if len(rising) < LR_RISE_INTERVALS:
        return None
    peak = max(rising, key=lambda r: r["loss"])
    nonfinite = sum(r["nonfinite_loss"] for r in early)
    return Finding(
        "lr-too-high",
        f"the train loss rose from {_g(start['loss'])} (steps up to {start['step']}) to {_g(peak['loss'])} "
        f"(up to step {peak['step']}) in the first {LR_EARLY_EPOCHS} epochs: {len(rising)} intervals above "
        f"{LR_RISE_FACTOR:g}x the start, {nonfinite} non-finite losses (lr {_lrs(rising[0])})",
        "lower the LR: nbt.find_lr(model, train_data, loss_fn) suggests one; add warmup_epochs and set "
        "clip_norm. Do not clamp the loss.",
        epoch=rising[LR_RISE_INTERVALS - 1]["epoch"],
        step=rising[LR_RISE_INTERVALS - 1]["step"],
    )


def _collapse(h: dict) -> tuple | None:
    """(class, predicted share, true share, recall, precision, other recall) when h's epoch collapsed."""
    cm = h.get("val_confusion")
    n = sum(map(sum, cm)) if cm else 0
    if not n:
        return None
    pred = [sum(row[j] for row in cm) for j in range(len(cm))]
    k = max(range(len(pred)), key=pred.__getitem__)
    others = sum(sum(row) for i, row in enumerate(cm) if i != k)
    if pred[k] < COLLAPSE_SHARE * n or not others:
        return None
    other_recall = sum(cm[i][i] for i in range(len(cm)) if i != k) / others
    if other_recall > COLLAPSE_OTHER_RECALL:
        return None
    return k, pred[k] / n, sum(cm[k]) / n, cm[k][k] / max(1, sum(cm[k])), cm[k][k] / pred[k], other_recall


def class_collapse(run) -> Finding | None:
    """`class-collapse`: COLLAPSE_EPOCHS epochs with one class >= COLLAPSE_SHARE of the predictions."""
    need = min(COLLAPSE_EPOCHS, run.config.epochs)
    streak: list[tuple[dict, tuple]] = []
    for h in run.history:
        c = _collapse(h)
        if c is None or (streak and streak[-1][1][0] != c[0]):
            streak = []
        if c is not None:
            streak.append((h, c))
        if len(streak) >= need:
            (h0, _), (h1, (k, share, true, rec, prec, other)) = streak[0], streak[-1]
            return Finding(
                "class-collapse",
                f"epochs {h0['epoch']}-{h1['epoch']}: {share:.0%} of validation predictions are class {k} "
                f"(its true share {true:.0%}); its recall {rec:.2f} at precision {prec:.2f} (= the base rate), "
                f"the other classes' recall {other:.2f}",
                "the model ignores its input and predicts one class (seed 000's 'recall stuck at 99 %'): "
                "check the LR (nbt.find_lr), the class weighting (FocalLoss alpha weights class 1; pos_weight), "
                "the decision threshold (TrainConfig.threshold) and that labels match inputs; "
                "nbt.overfit_batch(model, batch, loss_fn) tells whether it can fit at all.",
                epoch=h1["epoch"],
            )
    return None


def _at_chance(h: dict) -> bool:
    if h.get("val_auc") is not None:
        return abs(h["val_auc"] - 0.5) <= NO_LEARN_AUC_BAND
    cm = h.get("val_confusion")
    n = sum(map(sum, cm)) if cm else 0
    return bool(n) and h.get("val_acc") is not None and h["val_acc"] <= max(map(sum, cm)) / n + 0.02


def no_learning(run) -> Finding | None:
    """`no-learning`: NO_LEARN_EPOCHS epochs of flat train loss (< NO_LEARN_REL_DROP) at chance."""
    hist = run.history
    for i in range(len(hist) - NO_LEARN_EPOCHS + 1):
        w = hist[i : i + NO_LEARN_EPOCHS]
        losses = [h.get("train_loss") for h in w]
        if None in losses or losses[0] <= 0 or not all(_at_chance(h) for h in w):
            continue
        if (losses[0] - min(losses[1:])) < NO_LEARN_REL_DROP * losses[0]:
            aucs = [h["val_auc"] for h in w if h.get("val_auc") is not None]
            chance = (
                f"val AUC {min(aucs):.2f}-{max(aucs):.2f}" if aucs else "val accuracy at the majority share"
            )
            return Finding(
                "no-learning",
                f"epochs {w[0]['epoch']}-{w[-1]['epoch']}: train loss flat at {_g(losses[0])} -> "
                f"{_g(losses[-1])} (fell < {NO_LEARN_REL_DROP:.0%}) and {chance}, i.e. chance",
                "nothing is being learned: run nbt.overfit_batch(model, batch, loss_fn) (if it fails, the model, "
                "loss or labels are broken), nbt.find_lr for the LR, and check that layers meant to train are "
                "not frozen. A slow starter (seed 001 woke up at epoch 22) needs min_epochs, not a new model.",
                epoch=w[-1]["epoch"],
            )
    return None


def overfitting(run) -> Finding | None:
    """`overfitting`: OVERFIT_EPOCHS epochs of val loss >= (1 + OVERFIT_RISE) x its minimum, train falling."""
    hist = [h for h in run.history if h.get("val_loss") is not None and h.get("train_loss") is not None]
    best = None
    for i, h in enumerate(hist):
        if best is None or h["val_loss"] < best["val_loss"]:
            best = h
            continue
        tail = hist[max(0, i - OVERFIT_EPOCHS + 1) : i + 1]
        if len(tail) == OVERFIT_EPOCHS and all(
            t["epoch"] > best["epoch"]
            and t["val_loss"] >= (1 + OVERFIT_RISE) * best["val_loss"]
            and t["train_loss"] < best["train_loss"]
            for t in tail
        ):
            gap0, gap1 = best["val_loss"] - best["train_loss"], h["val_loss"] - h["train_loss"]
            return Finding(
                "overfitting",
                f"val loss rose from {_g(best['val_loss'])} (epoch {best['epoch']}) to {_g(h['val_loss'])} "
                f"(epoch {h['epoch']}) while train loss fell {_g(best['train_loss'])} -> {_g(h['train_loss'])}; "
                f"the gap grew {_g(gap0)} -> {_g(gap1)}",
                f"use best.pt (epoch {best['epoch']}, kept by fit); regularise (augmentation, dropout, "
                "weight_decay), get more data, or stop earlier (patience).",
                epoch=h["epoch"],
            )
    return None


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def stopped_too_early(run) -> Finding | None:
    """`stopped-too-early`: early stopping on a still-improving trend, or right at min_epochs."""
    if run.stop is None or run.stop.code != "early-stop" or not run.history:
        return None
    cfg, last = run.config, run.history[-1]["epoch"]
    pts = [(h["epoch"], h[cfg.monitor]) for h in run.history if h.get(cfg.monitor) is not None]
    w = pts[-max(cfg.patience or 0, 3) :]
    reasons = []
    if len(w) >= 3:
        sign = -1.0 if cfg.monitor_mode == "min" else 1.0
        gain = sign * _slope([e for e, _ in w], [v for _, v in w]) * (w[-1][0] - w[0][0])
        need = max(cfg.min_delta, STOP_TREND_REL * abs(statistics.fmean(v for _, v in w)))
        if gain > need:
            reasons.append(
                f"the trend of {cfg.monitor} over epochs {w[0][0]}-{w[-1][0]} still improved it by {_g(gain)} "
                f"(more than {_g(need)})"
            )
    if cfg.min_epochs and last <= cfg.min_epochs:
        reasons.append(
            f"it fired at epoch {last}, the first that min_epochs={cfg.min_epochs} allowed: patience had "
            "run out before, so the model got no time past min_epochs to wake up"
        )
    if not reasons:
        return None
    return Finding(
        "stopped-too-early",
        f"early stopping at epoch {last} (patience {cfg.patience}, min_delta {cfg.min_delta:g}): "
        + "; ".join(reasons),
        "continue the run: nbt.fit(..., resume='latest') with a larger patience or min_epochs (seed 001's model "
        "only started learning at epoch 22), a smaller min_delta, or a smoother monitor (val_loss).",
        epoch=last,
    )


STEP_RULES: tuple[Callable, ...] = (frozen_weights, exploding_gradients, lr_too_high)
EPOCH_RULES: tuple[Callable, ...] = (class_collapse, no_learning, overfitting, stopped_too_early)


def step_findings(run) -> list[Finding]:
    """The rules over run.steps (fit calls them at each log interval)."""
    return [f for rule in STEP_RULES if (f := rule(run)) is not None]


def epoch_findings(run) -> list[Finding]:
    """The rules over run.history (fit calls them after each epoch)."""
    return [f for rule in EPOCH_RULES if (f := rule(run)) is not None]
