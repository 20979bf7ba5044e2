"""The doctor's rules over `run.history` (one record per epoch): class collapse, no learning,
overfitting, early stopping too early. Each takes a Run and returns one Finding (with its status) or None.

- `class-collapse`: for COLLAPSE_EPOCHS = 3 consecutive epochs (fewer if the run is shorter), one
  class takes at least COLLAPSE_SHARE = 98 % of the validation predictions while the samples of the
  other classes are recalled at most COLLAPSE_OTHER_RECALL = 5 % (e.g. recall 99 % at a precision
  equal to the base rate: "predict positive always"). When val AUC stayed above
  0.5 + NO_LEARN_AUC_BAND through the streak, the scores do rank the classes: the evidence and the
  fix then name the decision threshold, not a model that ignores its input (Focal Loss scores often
  sit below 0.5).
- `no-learning`: for NO_LEARN_EPOCHS = 5 consecutive epochs the train loss fell by less than
  NO_LEARN_REL_DROP = 2 % of its value at the window's start, and validation stayed at chance:
  |AUC - 0.5| <= NO_LEARN_AUC_BAND = 0.1 (without an AUC: accuracy <= the majority share + 0.02).
- `overfitting`: the validation loss stayed at least OVERFIT_RISE = 10 % above its minimum for
  OVERFIT_EPOCHS = 3 consecutive epochs while the train loss kept falling below its value there, and
  in each of them the validation says the model got worse, not only its loss: the monitored metric is
  worse than at the val-loss minimum (by more than min_delta), or the val loss is more than
  OVERFIT_GAP = 10 % above the train loss. Never while the monitored metric is at its best (within
  min_delta of its best so far): a val loss that drifts up while accuracy or AUC stays at 1.0 and below
  the train loss (which dropout and augmentation raise) is confidence shifting on a saturated set, and
  best.pt, tie-broken by the val loss, already keeps the lower one. With monitor="val_loss" this is the loss rule alone.
  The fix names the epoch best.pt really holds: run.best_epoch, the best of cfg.monitor.
- `stopped-too-early`: early stopping ended the run while the least-squares trend of the monitored
  metric over the last `patience` epochs (at least 3) still improved it by more than
  max(min_delta, STOP_TREND_REL = 1 % of its mean), or at the first epoch `min_epochs` allowed
  (patience ran out before the model had the epochs min_epochs was meant to give it).

Status: class-collapse, no-learning and overfitting are resolved once the latest epochs are out of
their condition, at the first epoch of that trailing stretch (collapse: one class no longer takes
the predictions; no-learning: validation off chance; overfitting: val loss back within
OVERFIT_RISE of its minimum). stopped-too-early holds while the run's stop is that early stop.
"""

from __future__ import annotations

import statistics

from nbtools.runs.classes import class_name, class_names, positive_name
from nbtools.runs.findings import Finding, status_from

COLLAPSE_SHARE, COLLAPSE_OTHER_RECALL, COLLAPSE_EPOCHS = 0.98, 0.05, 3
NO_LEARN_EPOCHS, NO_LEARN_REL_DROP, NO_LEARN_AUC_BAND = 5, 0.02, 0.1
OVERFIT_RISE, OVERFIT_EPOCHS, OVERFIT_GAP = 0.10, 3, 0.10
STOP_TREND_REL = 0.01


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


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
            names = class_names(getattr(run, "meta", None))  # a run on the user's folders names its classes
            aucs = [h["val_auc"] for h, _ in streak if h.get("val_auc") is not None]
            ranks = len(aucs) == len(streak) and min(aucs) > 0.5 + NO_LEARN_AUC_BAND
            message = (
                f"epochs {h0['epoch']}-{h1['epoch']}: {share:.0%} of validation predictions are {class_name(names, k)}, "
                f"whose true share is {true:.0%}; its recall {rec:.2f} at precision {prec:.2f} against a base rate "
                f"of {true:.2f}, the other classes' recall {other:.2f}"
            )
            if ranks:  # the scores separate the classes: the cut puts them all on one side
                cut = h1.get("val_threshold")
                message += f", yet val AUC {min(aucs):.2f}-{max(aucs):.2f}: the scores rank the classes" + (
                    f" and threshold {cut:g} puts them all on one side" if cut is not None else ""
                )
                fix = (
                    "the model does tell the classes apart; the decision threshold does not: set "
                    "TrainConfig.threshold where the scores are (the threshold finding names the F1-optimal one "
                    "at the best epoch; nbt.viz.report(run) marks it on the ROC and PR curves), or weight the "
                    "rare class (FocalLoss alpha, pos_weight) so its scores move up."
                )
            else:
                fix = (
                    "the model ignores its input and predicts one class (seed 000's 'recall stuck at 99 %'): "
                    f"check the LR (nbt.find_lr), the class weighting (FocalLoss alpha weights {positive_name(names)}; "
                    "pos_weight), the decision threshold (TrainConfig.threshold) and that labels match inputs; "
                    "nbt.overfit_batch(model, batch, loss_fn) tells whether it can fit at all."
                )
            found = Finding("class-collapse", message, fix, epoch=h1["epoch"])
            return status_from(found, run.history, lambda h: _collapse(h) is not None)
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
            found = Finding(
                "no-learning",
                f"epochs {w[0]['epoch']}-{w[-1]['epoch']}: train loss flat at {_g(losses[0])} -> "
                f"{_g(losses[-1])} (fell < {NO_LEARN_REL_DROP:.0%}) and {chance}, i.e. chance",
                "nothing is being learned: run nbt.overfit_batch(model, batch, loss_fn) (if it fails, the model, "
                "loss or labels are broken), nbt.find_lr for the LR, and check that layers meant to train are "
                "not frozen. A slow starter (seed 001 woke up at epoch 22) needs min_epochs, not a new model.",
                epoch=w[-1]["epoch"],
            )
            return status_from(found, hist, _at_chance)
    return None


def _worse(a, b, mode: str, margin: float) -> bool:
    """a is worse than b by more than margin (False when either is undefined)."""
    if a is None or b is None:
        return False
    return a - b > margin if mode == "min" else b - a > margin


def overfitting(run) -> Finding | None:
    """`overfitting`: OVERFIT_EPOCHS epochs of val loss >= (1 + OVERFIT_RISE) x its minimum, train
    falling, and the monitored metric worse than there or the val loss above the train loss by
    OVERFIT_GAP; never while the monitored metric is at its best."""
    cfg = run.config
    monitor, mode, margin = cfg.monitor, cfg.monitor_mode, cfg.min_delta
    hist = [h for h in run.history if h.get("val_loss") is not None and h.get("train_loss") is not None]
    at_best, top = {}, None  # per epoch: is the monitored metric within min_delta of its best so far?
    for h in hist:
        v = h.get(monitor)
        if v is not None and (top is None or _worse(top, v, mode, 0.0)):
            top = v
        at_best[h["epoch"]] = v is not None and not _worse(v, top, mode, margin)

    def worse_than(t: dict, low: dict) -> bool:  # the validation says t is worse, not only its loss
        gap = t["val_loss"] > (1 + OVERFIT_GAP) * t["train_loss"]
        return _worse(t.get(monitor), low.get(monitor), mode, margin) or gap

    best = None
    for i, h in enumerate(hist):
        if best is None or h["val_loss"] < best["val_loss"]:
            best = h
            continue
        tail = hist[max(0, i - OVERFIT_EPOCHS + 1) : i + 1]
        if (
            len(tail) == OVERFIT_EPOCHS
            and not at_best[h["epoch"]]
            and all(
                t["epoch"] > best["epoch"]
                and t["val_loss"] >= (1 + OVERFIT_RISE) * best["val_loss"]
                and t["train_loss"] < best["train_loss"]
                and worse_than(t, best)
                for t in tail
            )
        ):
            gap0, gap1 = best["val_loss"] - best["train_loss"], h["val_loss"] - h["train_loss"]
            found = Finding(
                "overfitting",
                f"val loss rose from {_g(best['val_loss'])} (epoch {best['epoch']}) to {_g(h['val_loss'])} "
                f"(epoch {h['epoch']}) while train loss fell {_g(best['train_loss'])} -> {_g(h['train_loss'])}; "
                f"the gap grew {_g(gap0)} -> {_g(gap1)}"
                + (
                    f"; {monitor} {_g(best.get(monitor))} -> {_g(h.get(monitor))}"
                    if monitor != "val_loss"
                    else ""
                ),
                f"{_best_pt(run, best['epoch'])}; regularise (augmentation, dropout, weight_decay), get more "
                "data, or stop earlier (patience).",
                epoch=h["epoch"],
            )
            floor = (1 + OVERFIT_RISE) * min(t["val_loss"] for t in hist)
            return status_from(
                found,
                hist[i:],
                lambda t, floor=floor, low=best: (
                    t["val_loss"] >= floor and worse_than(t, low) and not at_best[t["epoch"]]
                ),
            )
    return None


def _best_pt(run, val_loss_epoch: int) -> str:
    """What best.pt holds: fit saves it at the best epoch of cfg.monitor (run.best_epoch), which need
    not be the epoch of the lowest val loss."""
    monitor = run.config.monitor
    if run.best_epoch is None:
        return f"use best.pt (fit keeps the epoch of the best {monitor} there)"
    if run.best_epoch == val_loss_epoch:
        return f"use best.pt (epoch {run.best_epoch}, the best {monitor}, kept by fit)"
    return (
        f"best.pt holds epoch {run.best_epoch} (the best {monitor}), not the val-loss minimum at epoch "
        f"{val_loss_epoch}: use it if {monitor} is what matters, or monitor='val_loss' to keep that epoch"
    )


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
