"""Report figures of a regression run, in the user's units: predicted against true (with the identity
line: points on it are exact), and the residuals (predicted - true) against the true value, where a
trend says the model regresses to the mean (it under-predicts large values and over-predicts small
ones, the usual sign of an under-fitted head). One panel per output, up to MAX_PANELS."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

MAX_PANELS = 8  # as the per-output metrics (nbtools.tasks.regression.PER_OUTPUT_MAX)


def _columns(targets: np.ndarray, predicted: np.ndarray, names: list[str] | None):
    y = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    p = np.asarray(predicted, dtype=np.float64).reshape(len(predicted), -1)
    if y.shape != p.shape:
        raise ValueError(f"targets {y.shape} and predictions {p.shape} differ: one value of each per output")
    k = min(y.shape[1], MAX_PANELS)
    names = names if names and len(names) == y.shape[1] else [str(j) for j in range(y.shape[1])]
    return y[:, :k], p[:, :k], names[:k]


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return float("nan") if ss == 0 else 1.0 - float(((p - y) ** 2).sum()) / ss


def scatter_figure(targets, predicted, epoch: int, names: list[str] | None = None) -> Figure:
    """Predicted against true per output, the identity line dotted, MAE and R^2 in each panel's title."""
    y, p, names = _columns(targets, predicted, names)
    k = y.shape[1]
    fig = Figure(figsize=(4.2 * k, 4), layout="constrained")
    for j, ax in enumerate(np.atleast_1d(fig.subplots(1, k))):
        lo, hi = min(y[:, j].min(), p[:, j].min()), max(y[:, j].max(), p[:, j].max())
        ax.plot([lo, hi], [lo, hi], ls=":", color="gray", label="predicted = true")
        ax.scatter(y[:, j], p[:, j], s=12, alpha=0.7)
        mae = float(np.abs(p[:, j] - y[:, j]).mean())
        ax.set(xlabel=f"true {names[j]}", ylabel=f"predicted {names[j]}",
               title=f"{names[j]}: MAE {mae:.4g}, R$^2$ {_r2(y[:, j], p[:, j]):.3f}")  # fmt: skip
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"predicted vs true (best epoch {epoch}, {len(y)} val samples)", fontsize=10)
    return fig


def residual_figure(targets, predicted, epoch: int, names: list[str] | None = None) -> Figure:
    """Residuals (predicted - true) against the true value per output, zero dotted, their mean and
    std in each panel's title (a mean far from 0 is a bias; a slope is regression to the mean)."""
    y, p, names = _columns(targets, predicted, names)
    k = y.shape[1]
    fig = Figure(figsize=(4.2 * k, 3.6), layout="constrained")
    for j, ax in enumerate(np.atleast_1d(fig.subplots(1, k))):
        r = p[:, j] - y[:, j]
        ax.axhline(0.0, ls=":", color="gray")
        ax.scatter(y[:, j], r, s=12, alpha=0.7, color="tab:orange")
        ax.set(xlabel=f"true {names[j]}", ylabel="predicted - true",
               title=f"{names[j]}: residual mean {r.mean():.3g}, std {r.std():.3g}")  # fmt: skip
    fig.suptitle(f"residuals (best epoch {epoch})", fontsize=10)
    return fig


def task_figures(best: dict, names: list[str] | None = None) -> dict[str, Figure]:
    """The report's figures from best_val.pt when it holds regression predictions: {"predicted_vs_true",
    "residuals"} for a regression run ({"predicted", "targets"} in user units), the same per regression
    head of a MultiTaskLoss run ("heads": {head: ...}, figures named "<head>_predicted_vs_true", ...).
    Classification parts (logits) are left to the classification figures; {} when there is none."""
    figures: dict[str, Figure] = {}
    parts = [("", best, names)] + [(f"{h}_", part, None) for h, part in (best.get("heads") or {}).items()]
    for prefix, part, part_names in parts:
        if not isinstance(part, dict) or not {"predicted", "targets"} <= set(part):
            continue
        y, p = np.asarray(part["targets"], dtype=np.float64), np.asarray(part["predicted"], dtype=np.float64)
        figures[f"{prefix}predicted_vs_true"] = scatter_figure(y, p, best["epoch"], part_names)
        figures[f"{prefix}residuals"] = residual_figure(y, p, best["epoch"], part_names)
    return figures
