"""loss_curve.png and learning_curves.png in the run folder (matplotlib, no pyplot state)."""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.figure import Figure

from nbtools.runs.files import LEARNING_CURVES_FILE, LOSS_CURVE_FILE
from nbtools.viz.panels import lr_plan_changes

log = logging.getLogger(__name__)

_METRICS = ("val_acc", "val_precision", "val_recall", "val_f1", "val_auc")


def _series(records: list[dict], x: str, y: str) -> tuple[list, list]:
    pts = [(r[x], r[y]) for r in records if r.get(y) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_figure(run) -> Figure:
    """Train loss per log interval and per epoch, val loss per epoch, against the epoch axis."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    spe = {h["epoch"]: h["step"] for h in run.history}
    steps = [dict(r, x=r["step"] / max(1, spe.get(r["epoch"], r["step"])) * r["epoch"]) for r in run.steps]
    ax.plot(*_series(steps, "x", "loss"), color="C0", alpha=0.35, lw=1, label="train loss (interval)")
    ax.plot(*_series(run.history, "epoch", "train_loss"), "o-", color="C0", label="train loss")
    ax.plot(*_series(run.history, "epoch", "val_loss"), "o-", color="C1", label="val loss")
    if any("ema_val_loss" in h for h in run.history):
        ax.plot(*_series(run.history, "epoch", "ema_val_loss"), "s--", color="C2", label="EMA val loss")
    if run.best_epoch:
        ax.axvline(run.best_epoch, color="gray", ls=":", label=f"best epoch {run.best_epoch}")
    ax.set(xlabel="epoch", ylabel="loss", title=f"{Path(run.run_dir).name}: loss")
    ax.legend(fontsize=8)
    return fig


def learning_figure(run) -> Figure:
    """Validation metrics per epoch (and the learning rate of each parameter group)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax_lr = fig.subplots(1, 2)
    for i, key in enumerate(_METRICS):
        ax.plot(*_series(run.history, "epoch", key), "o-", color=f"C{i}", label=key.removeprefix("val_"))
    ax.set(xlabel="epoch", ylabel="metric", title="validation", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    for name in run.history[0]["lr"] if run.history else []:
        lrs = [(h["epoch"], h["lr"][name]) for h in run.history]
        ax_lr.plot([e for e, _ in lrs], [v for _, v in lrs], "o-", label=name)
    steps_per_epoch = run.history[0]["step"] / run.history[0]["epoch"] if run.history else 1
    for j, change in enumerate(lr_plan_changes(run.config_changes)):
        ax_lr.axvline(
            change["step"] / steps_per_epoch,
            color="gray",
            ls="--",
            lw=1,
            label="resumed, new LR plan" if j == 0 else None,
        )
    ax_lr.set(xlabel="epoch", ylabel="lr (end of epoch)", title="learning rate", yscale="log")
    if run.history:
        ax_lr.legend(fontsize=8)
    return fig


def save_curves(run) -> list[Path]:
    """Write loss_curve.png and learning_curves.png into the run folder; returns their paths."""
    if not run.history:
        return []
    out = []
    for name, make in ((LOSS_CURVE_FILE, loss_figure), (LEARNING_CURVES_FILE, learning_figure)):
        path = Path(run.run_dir) / name
        make(run).savefig(path, dpi=100)
        out.append(path)
    return out
