"""Axes-level plots of a run's records, shared by the live dashboard and the report figures.

`steps` are telemetry records (one per log interval, see nbtools.train.telemetry) and `history`
the per-epoch records; both may be partial (a run still training). The x axis is the global
optimizer step. Values that are None (non-finite in metrics.json, or no good step) are left out.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.ticker import LogLocator, NullLocator

from nbtools.diagnose.rules import FROZEN_REL_DRIFT
from nbtools.runs.classes import positive_name

_METRICS = ("val_acc", "val_precision", "val_recall", "val_f1", "val_auc", "val_pred_pos_rate")


def _xy(records: list[dict], y, x: str = "step") -> tuple[list, list]:
    get = y if callable(y) else (lambda r: r.get(y))
    pts = [(r[x], v) for r in records if (v := get(r)) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _positive(records: list[dict], y) -> tuple[list, list]:
    xs, ys = _xy(records, y)
    keep = [(a, b) for a, b in zip(xs, ys) if b > 0]  # a log axis cannot show 0
    return [a for a, _ in keep], [b for _, b in keep]


def _log_y(ax: Axes) -> None:
    ax.set_yscale("log")
    # Minor log ticks are most of a redraw's cost; 1-2-3-5 majors keep a range within a decade labelled.
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0), numticks=8))
    ax.yaxis.set_minor_locator(NullLocator())


def loss_panel(ax: Axes, steps: list[dict], history: list[dict]) -> None:
    """Train loss per interval (line) and per epoch, validation loss per epoch (markers)."""
    ax.plot(*_xy(steps, "loss"), color="C0", alpha=0.4, lw=1, label="train (interval)")
    ax.plot(*_xy(history, "train_loss"), "o-", color="C0", ms=4, label="train (epoch)")
    ax.plot(*_xy(history, "val_loss"), "o-", color="C1", ms=4, label="val")
    if any(h.get("ema_val_loss") is not None for h in history):
        ax.plot(*_xy(history, "ema_val_loss"), "s--", color="C2", ms=3, label="EMA val")
    ax.set(xlabel="step", ylabel="loss", title="loss")
    if steps or history:
        ax.legend(fontsize=7)


def grad_panel(ax: Axes, steps: list[dict]) -> None:
    """Gradient norm (mean and max per interval) and per parameter group, log scale; skipped steps
    are marked as red ticks along the bottom."""
    ax.plot(*_positive(steps, "grad_norm"), color="k", lw=1.5, label="total (mean)")
    ax.plot(*_positive(steps, "grad_norm_max"), color="k", lw=0.8, alpha=0.35, label="total (max)")
    groups = list(steps[-1]["group_grad_norm"]) if steps else []
    if len(groups) > 1:
        for i, g in enumerate(groups):
            ax.plot(
                *_positive(steps, lambda r, g=g: r["group_grad_norm"].get(g)), color=f"C{i}", lw=1, label=g
            )
    skipped = [s for r in steps for s in r["skipped_steps"]]
    if skipped:
        ax.plot(skipped, [0.02] * len(skipped), "|", color="red", ms=10, transform=ax.get_xaxis_transform())
        ax.plot([], [], "|", color="red", label=f"skipped ({len(skipped)})")
    ax.set(xlabel="step", ylabel="grad norm (before clipping)", title="gradient norm")
    if any(r["grad_norm"] for r in steps):
        _log_y(ax)
        ax.legend(fontsize=7)


def lr_plan_changes(config_changes: list[dict]) -> list[dict]:
    """The run.config_changes entries of resumes that changed the LR plan (see nbtools.train.schedule)."""
    return [c for c in config_changes if c.get("lr_plan")]


def lr_panel(ax: Axes, steps: list[dict], config_changes: list[dict] = ()) -> None:
    """Learning rate of each parameter group at the end of each interval, log scale; a resume that
    changed the LR plan is a dashed line at its step."""
    groups = list(steps[-1]["lr"]) if steps else []
    for i, g in enumerate(groups):
        ax.plot(*_positive(steps, lambda r, g=g: r["lr"].get(g)), color=f"C{i}", label=g)
    for j, change in enumerate(lr_plan_changes(config_changes)):
        ax.axvline(
            change["step"], color="gray", ls="--", lw=1, label="resumed, new LR plan" if j == 0 else None
        )
    ax.set(xlabel="step", ylabel="lr", title="learning rate")
    if groups:
        _log_y(ax)
        ax.legend(fontsize=7)


def scale_panel(ax: Axes, steps: list[dict]) -> None:
    """fp16 GradScaler scale (log) and the skipped steps per interval (bars, right axis)."""
    xs, scales = _positive(steps, "scale")
    if scales:
        ax.plot(xs, scales, color="C4", label="scaler scale")
        _log_y(ax)
    else:
        ax.text(0.5, 0.6, "no GradScaler (fp32 / bf16)", ha="center", transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])
    twin = ax.twinx()
    xs, skipped = _xy(steps, "skipped")
    widths = [max(1, r["steps"]) * 0.8 for r in steps]
    twin.bar(xs, skipped, width=widths, align="edge", color="red", alpha=0.4)
    twin.set_ylabel("skipped steps / interval", fontsize=8)
    twin.set_ylim(bottom=0)
    ax.set(xlabel="step", title="loss scale and skipped steps")


def drift_panel(ax: Axes, steps: list[dict]) -> None:
    """How far the weights moved per interval relative to their norm, log scale (the frozen-weights
    threshold is the dotted line; measured on the model, never the EMA copy)."""
    xs, rel = _xy(
        steps, lambda r: r["drift"] / r["param_norm"] if r["drift"] is not None and r["param_norm"] else None
    )
    frozen = [x for x, v in zip(xs, rel) if v <= FROZEN_REL_DRIFT]
    moving = [(x, v) for x, v in zip(xs, rel) if v > FROZEN_REL_DRIFT]
    ax.plot(
        [x for x, _ in moving], [v for _, v in moving], "o-", color="C2", ms=3, label="drift / param norm"
    )
    if frozen:
        ax.plot(frozen, [FROZEN_REL_DRIFT] * len(frozen), "v", color="red", label="frozen")
    ax.axhline(FROZEN_REL_DRIFT, color="gray", ls=":", lw=1)
    _log_y(ax)
    ax.set(xlabel="step", title="weight drift per interval")
    if steps:
        ax.legend(fontsize=7)


def metrics_panel(ax: Axes, history: list[dict], classes: list[str] | None = None) -> None:
    """Validation metrics per epoch (x = the epoch's last step), with the share of samples predicted
    positive, named after the positive class when the run knows the class names (`classes`)."""
    low = -0.02
    for i, key in enumerate(_METRICS + _others(history)):
        xs, ys = _xy(history, key)
        if ys:
            dashed = key == "val_pred_pos_rate"
            label = f"predicted {positive_name(classes)}" if dashed and classes else key[4:]
            ax.plot(xs, ys, marker="o", ms=3, ls="--" if dashed else "-", color=f"C{i % 10}", label=label)
            low = min(low, max(-1.02, min(ys)))  # an R^2 below 0 shows down to -1
    ax.set(xlabel="step", title="validation (per epoch)", ylim=(low, 1.02))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


_UNIT_FREE = ("_r2", "_acc", "_f1", "_auc", "_dice")  # a regression run's or a named head's, on one 0-1 axis


def _others(history: list[dict]) -> tuple[str, ...]:
    """Unit-free validation metrics beyond a classification run's: val_r2, val_<head>_acc, ..."""
    keys = history[-1] if history else {}
    return tuple(k for k in keys if k.startswith("val_") and k.endswith(_UNIT_FREE) and k not in _METRICS)
