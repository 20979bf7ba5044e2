"""The doctor's rules that read what a task records: a segmentation model that predicts background only,
early stopping before the model started learning (seed 001: Dice ~0 for 21 epochs, then 0.30), and a train
loss that turned non-finite, named by the loss term that did.

- `seg-background-only`: in a segmentation run, a foreground class's val_dice_<class> stays at most
  BG_DICE = 0.05 for BG_EPOCHS = 3 consecutive epochs while the train loss falls (by more than
  BG_LOSS_DROP = 2 % over them): the loss improves by getting the background right. Open while the latest
  epoch is still so; resolved at the first epoch of the trailing stretch where the class's Dice is above.
- `stopped-too-early` (besides the trend and min_epochs cases of nbtools.diagnose.epoch_rules): early
  stopping ended a run whose monitored metric never left its first epoch's level, by more than
  max(min_delta, WAKE_REL = 5 % of it, WAKE_ABS = 0.01): the model had not started learning, and
  patience counted from an epoch that was no best at all. When it did start (the first epoch past that
  level), the finding says which epoch, as the reference for patience.
- `loss-term-nonfinite`: a log interval with non-finite train losses whose telemetry names the terms that
  were non-finite (TaskLoss terms: a head, a deep-supervision output, a Dice/CE part), while the latest
  validation loss is finite: the loss itself overflows on training batches. Open while the latest
  interval still has such steps.
"""

from __future__ import annotations

import math

from nbtools.diagnose.epoch_rules import stopped_too_early as trend_stop
from nbtools.runs.findings import Finding, status_from
from nbtools.tasks.segmentation import metric_name

BG_DICE, BG_EPOCHS, BG_LOSS_DROP = 0.05, 3, 0.02
WAKE_REL, WAKE_ABS = 0.05, 0.01


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _low(h: dict, key: str) -> bool:
    v = h.get(key)
    return v is not None and math.isfinite(v) and v <= BG_DICE


def seg_background_only(run) -> Finding | None:
    """`seg-background-only`: a class's Dice <= BG_DICE for BG_EPOCHS epochs while the train loss falls."""
    task = getattr(run, "task", None) or {}
    if task.get("name") != "segmentation":
        return None
    classes = task.get("classes") or ["background", *map(str, range(1, int(task.get("num_classes", 2))))]
    hist = [h for h in run.history if h.get("train_loss") is not None]
    for i in range(BG_EPOCHS - 1, len(hist)):
        w = hist[i + 1 - BG_EPOCHS : i + 1]
        falling = w[-1]["train_loss"] < (1 - BG_LOSS_DROP) * w[0]["train_loss"]
        stuck = [c for c in classes[1:] if all(_low(h, f"val_dice_{metric_name(c)}") for h in w)]
        if not (falling and stuck):
            continue
        keys = [f"val_dice_{metric_name(c)}" for c in stuck]
        found = Finding(
            "seg-background-only",
            f"the Dice of {', '.join(repr(c) for c in stuck)} stayed at most {BG_DICE:g} over epochs "
            f"{w[0]['epoch']}-{w[-1]['epoch']} ({', '.join(f'{k} {_g(w[-1][k])}' for k in keys)}) while the train "
            f"loss fell {_g(w[0]['train_loss'])} -> {_g(w[-1]['train_loss'])}: the model predicts background, "
            "and the loss improves by getting the background right",
            "train with Dice + cross-entropy (nbt.losses.DiceCELoss, which leaves the background out of the Dice) "
            "rather than cross-entropy alone; sample more patches around foreground "
            "(SegmentationFolder(oversample=0.33 or more)); weight the rare classes (DiceCELoss(alpha=[...]))",
            epoch=w[-1]["epoch"],
        )
        return status_from(found, run.history[i:], lambda h, keys=keys: any(_low(h, k) for k in keys))
    return None


def _woke(run) -> tuple[int | None, float, float]:
    """(the first epoch the monitored metric left its first epoch's level, that level, the margin)."""
    cfg = run.config
    pts = [(h["epoch"], h[cfg.monitor]) for h in run.history if h.get(cfg.monitor) is not None]
    first = pts[0][1]
    need = max(cfg.min_delta, WAKE_REL * abs(first), WAKE_ABS)
    sign = -1.0 if cfg.monitor_mode == "min" else 1.0
    return next((e for e, v in pts if sign * (v - first) > need), None), first, need


def stopped_too_early(run) -> Finding | None:
    """`stopped-too-early`: epoch_rules' cases, and early stopping before the model started learning."""
    found = trend_stop(run)
    if run.stop is None or run.stop.code != "early-stop" or not run.history:
        return found
    if not any(h.get(run.config.monitor) is not None for h in run.history):
        return found
    cfg, last = run.config, run.history[-1]["epoch"]
    woke, first, need = _woke(run)
    if woke is not None and found is not None:
        return Finding(found.code, f"{found.message}; the model started learning at epoch {woke}", found.fix,
                       epoch=found.epoch)  # fmt: skip
    if woke is not None:
        return None
    return Finding(
        "stopped-too-early",
        f"early stopping at epoch {last} (patience {cfg.patience}) before the model started learning: "
        f"{cfg.monitor} never moved from its epoch-1 level {_g(first)} by more than {_g(need)}, so patience "
        "counted from an epoch that was no best at all",
        "continue the run: nbt.fit(..., resume='latest') with min_epochs past the epoch a model like this one "
        "starts learning (seed 001's U-Net: Dice ~0 for 21 epochs, then 0.30) and patience counted from there; "
        "if it never starts, check the data and the LR (nbt.find_lr, nbt.overfit_batch).",
        epoch=last,
    )


def _nonfinite_terms(r: dict) -> list[str]:
    """The most specific terms an interval names non-finite: a part ("main.log_cosh_dice") before its
    whole ("main")."""
    bad = r.get("nonfinite_terms") or []
    return [t for t in bad if not any(o.startswith(t + ".") for o in bad)]


def loss_term_nonfinite(run) -> Finding | None:
    """`loss-term-nonfinite`: non-finite train losses with the terms that caused them, val loss finite."""
    val = [h.get("val_loss") for h in run.history]
    if val and (val[-1] is None or not math.isfinite(val[-1])):
        return None
    hit = next((r for r in run.steps if r.get("nonfinite_loss") and _nonfinite_terms(r)), None)
    if hit is None:
        return None
    terms = _nonfinite_terms(hit)
    total = sum(r.get("nonfinite_loss", 0) for r in run.steps if _nonfinite_terms(r))
    found = Finding(
        "loss-term-nonfinite",
        f"the train loss was non-finite at {total} step(s) from step {hit['skipped_steps'][0] if hit.get('skipped_steps') else hit['step']}, "
        f"in the loss term{'s' * (len(terms) > 1)} {', '.join(repr(t) for t in terms)}, while the validation "
        "loss stays finite: the loss overflows on some training batches (those steps were skipped)",
        f"make {terms[0]!r} finite at any input: compute it in float32 and in log space (log(cosh(x)) is "
        "x + softplus(-2x) - log 2, as nbt.losses.LogCoshDiceLoss computes it; softplus / logsigmoid instead of "
        "log(1 + exp)); nbt.find_nonfinite(model, batch, loss) names the module. Do not clamp the loss.",
        epoch=hit["epoch"],
        step=hit["step"],
    )
    return status_from(found, run.steps, lambda r: bool(r.get("nonfinite_loss") and _nonfinite_terms(r)))
