"""`threshold`: the decision threshold of a binary task, against the F1-optimal one at the best epoch.

Every epoch, `fit` records with the validation metrics the threshold they were computed at
(`val_threshold`, = TrainConfig.threshold), the threshold that maximises F1 on the validation set
(`val_opt_threshold`, from scikit-learn's precision_recall_curve) and that F1 (`val_opt_f1`).
The finding fires when a run has ended (all its epochs, or early stopping) and, at its best epoch
(`run.best_epoch`, whose predictions are in best_val.pt), the F1-optimal threshold gains at least
THRESHOLD_F1_GAIN = 0.05 F1 over the configured one: with imbalanced labels and Focal Loss the scores
often sit far from 0.5. "Far" is that gain, not a distance between thresholds: below it
the choice is within the noise of picking a threshold on the validation set, so it is left alone.
The optimal threshold must also beat predicting every sample positive (F1 = 2p / (1 + p) at
positive rate p, from `val_pos_rate`) by that much; a model at chance "gains" by calling everything
positive, and that is class-collapse's or no-learning's business, not the threshold's. While a run
trains, its best epoch moves and early epochs are rarely calibrated, so nothing is said before it ends.
The threshold is picked on the validation data, so its F1 there is optimistic: confirm it on data
the threshold was not picked on. `nbt.viz.report(run)` marks both thresholds on the ROC and PR curves.

It is open while it holds at the best epoch, and resolved (at the new best epoch) once a resumed
run's later best epoch no longer shows the gain.
"""

from __future__ import annotations

from nbtools.runs import Finding

THRESHOLD_F1_GAIN = 0.05


def threshold(run) -> Finding | None:
    """`threshold`: at the ended run's best epoch, val_opt_f1 - val_f1 >= THRESHOLD_F1_GAIN (binary)."""
    ended = run.epoch >= run.config.epochs or (run.stop is not None and run.stop.code == "early-stop")
    best = run.best() if run.best_epoch is not None and ended else None
    if not best or best.get("val_opt_threshold") is None or best.get("val_f1") is None:
        return None
    used = best.get("val_threshold", run.config.threshold)
    gain = best["val_opt_f1"] - best["val_f1"]
    p = best.get("val_pos_rate")
    all_positive = 2 * p / (1 + p) if p is not None else 0.0
    if gain < THRESHOLD_F1_GAIN or best["val_opt_f1"] - all_positive < THRESHOLD_F1_GAIN:
        return None
    t = best["val_opt_threshold"]
    return Finding(
        "threshold",
        f"at the best epoch {best['epoch']} the validation F1 is {best['val_f1']:.3f} at threshold {used:g} "
        f"but {best['val_opt_f1']:.3f} at {t:.4g} (+{gain:.3f}): the scores sit away from {used:g}",
        f"use threshold={t:.4g} for the metrics of later epochs (resume with it) and as predict's cut on "
        "the probabilities (its threshold=). It was picked on the validation "
        "set, so its F1 there is optimistic: check it on data it was not picked on. The ROC and PR "
        "figures of nbt.viz.report(run) mark both thresholds.",
        epoch=best["epoch"],
    )
