"""`nbt.viz.report(run)`: the figures of a finished (or running) run, saved as PNG in its folder.

loss_curve.png and learning_curves.png (nbtools.viz.curves), grad_norms.png (total and per group,
log scale, skipped steps marked; loss scale and skips per interval), and from best_val.pt (the
validation logits at the best epoch) confusion_matrix.png, roc_curve.png and, for binary tasks,
pr_curve.png; both curves mark the configured threshold and the F1-optimal one (the `threshold`
finding's numbers). A regression run (or a regression head) gets predicted_vs_true.png and residuals.png
instead, in the user's units (nbtools.viz.regression_figures), and no confusion matrix.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from nbtools.runs import Run, classification_metrics, probabilities
from nbtools.runs.classes import class_name, class_names
from nbtools.runs.files import BEST_VAL_FILE, run_path
from nbtools.tasks.classification_metrics import f1_optimal_threshold
from nbtools.viz import panels
from nbtools.viz.curves import learning_figure, loss_figure
from nbtools.viz.regression_figures import task_figures

log = logging.getLogger(__name__)


@dataclass
class Report:
    """The figures by name and the PNG files written; a notebook shows it as the images inline."""

    figures: dict[str, Figure]
    paths: dict[str, Path] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        imgs = []
        for name, fig in self.figures.items():
            if name in self.paths:  # already rendered once, by the save
                png = self.paths[name].read_bytes()
            else:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=100)
                png = buf.getvalue()
            data = base64.b64encode(png).decode("ascii")
            imgs.append(f"<figure><img src='data:image/png;base64,{data}' alt='{name}'></figure>")
        return "".join(imgs)


def grad_norm_figure(run: Run) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax, ax_scale = fig.subplots(1, 2, width_ratios=(3, 2))
    panels.grad_panel(ax, run.steps)
    panels.scale_panel(ax_scale, run.steps)
    return fig


def confusion_figure(
    targets: np.ndarray, logits: np.ndarray, threshold: float, epoch: int, classes: list[str] | None = None
) -> Figure:
    """classes: the class names of labels 0, 1, ... (a run on a folder records them), for the ticks."""
    cm = np.asarray(classification_metrics(targets, logits, threshold)["confusion"])
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ticks = range(len(cm))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true")
    if classes and len(classes) == len(cm):
        ax.set_xticklabels(classes, rotation=30 if max(map(len, classes)) > 6 else 0)
        ax.set_yticklabels(classes)
    ax.set_title(
        f"confusion matrix, best epoch {epoch}" + (f" (threshold {threshold:g})" if len(cm) == 2 else "")
    )
    fig.colorbar(im, ax=ax)
    return fig


def _positive_score(logits: np.ndarray) -> np.ndarray | None:
    """The positive class's probability for a binary task (one logit or two classes), else None."""
    p = probabilities(logits)
    return p if p.ndim == 1 else p[:, 1] if p.shape[1] == 2 else None


def _operating_points(y: np.ndarray, score: np.ndarray, threshold: float | None) -> list[tuple]:
    """(label, threshold, fpr, tpr, precision) at the configured and at the F1-optimal threshold."""
    opt = f1_optimal_threshold(y, score)
    marks = [("threshold", threshold)] if threshold is not None else []
    marks += [("F1-optimal", opt[0])] if opt is not None else []
    points = []
    for label, t in marks:
        pred, pos = score >= t, y == 1
        tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        points.append((label, t, fp / max(1, int((~pos).sum())), tp / max(1, int(pos.sum())), precision))
    return points


def roc_figure(
    targets: np.ndarray,
    logits: np.ndarray,
    epoch: int,
    threshold: float | None = None,
    classes: list[str] | None = None,
) -> Figure:
    """Binary: the positive class's ROC, with the configured and the F1-optimal thresholds marked.
    More classes: one-vs-rest per class."""
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    p, binary = probabilities(logits), _positive_score(logits)
    scores = {1: binary} if binary is not None else dict(enumerate(p.T))
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for k, score in scores.items():
        if len(np.unique(y == k)) < 2:
            log.info("ROC for class %d skipped: the validation set has only one of its two sides", k)
            continue
        fpr, tpr, _ = roc_curve(y == k, score)
        ax.plot(fpr, tpr, label=f"{class_name(classes, k)}, AUC {auc(fpr, tpr):.3f}")
        if binary is not None:
            for (label, t, x, yy, _), m in zip(_operating_points(y, score, threshold), "os"):
                ax.plot([x], [yy], m, ms=7, mfc="none", label=f"{label} {t:.3g}")
    ax.plot([0, 1], [0, 1], ls=":", color="gray")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, best epoch {epoch}")
    ax.legend(fontsize=8)
    return fig


def pr_figure(
    targets: np.ndarray, logits: np.ndarray, epoch: int, threshold: float, classes: list[str] | None = None
) -> Figure | None:
    """Binary tasks: precision against recall, with the configured and the F1-optimal thresholds
    marked (the `threshold` finding's two numbers). None for more classes or one class only."""
    y, score = np.asarray(targets).astype(np.int64).reshape(-1), _positive_score(logits)
    if score is None or len(np.unique(y)) < 2:
        return None
    precision, recall, _ = precision_recall_curve(y, score)
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(recall, precision, label=f"{class_name(classes, 1)}, positive rate {np.mean(y == 1):.2f}")
    for (label, t, _, tpr, prec), m in zip(_operating_points(y, score, threshold), "os"):
        f1 = 2 * prec * tpr / (prec + tpr) if prec + tpr else 0.0
        ax.plot([tpr], [prec], m, ms=7, mfc="none", label=f"{label} {t:.3g} (F1 {f1:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall, best epoch {epoch}", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return fig


def dice_figure(best: dict) -> Figure:
    """Dice of every validation case at the best epoch, one column per foreground class (a point per case,
    the median marked); cases where a class is undefined (empty mask) are left out and counted."""
    dice = best["dice_per_case"].double().numpy()
    names = [str(c) for c in best.get("classes", [])][1:] or [str(k + 1) for k in range(dice.shape[1])]
    fig = Figure(figsize=(1.6 + 1.3 * len(names), 3.4), layout="constrained")
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        values = dice[:, k][~np.isnan(dice[:, k])]
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.plot(k + jitter, values, "o", ms=4, alpha=0.7)
        if len(values):
            ax.plot([k - 0.25, k + 0.25], [np.median(values)] * 2, "k-", lw=2)
        left = int(np.isnan(dice[:, k]).sum())
        names[k] = f"{name}" + (f"\n({left} left out)" if left else "")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set(ylim=(-0.02, 1.02), ylabel="Dice", title=f"Dice per validation case, best epoch {best['epoch']}")
    return fig


def _best_val(path: Path) -> dict:
    """best_val.pt, or a ValueError naming the file, the cause and what to do."""
    try:
        best = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(best, dict) or "epoch" not in best:
            raise ValueError(f"it holds no epoch (found {type(best).__name__})")
    except Exception as e:  # torch.load raises UnpicklingError, RuntimeError, EOFError, ... on a bad file
        raise ValueError(
            f"{path.absolute()} cannot be read ({type(e).__name__}: {e}); it holds the best epoch's validation "
            f"logits for the confusion matrix and ROC: delete it for a report without them (training writes "
            f"it again when an epoch improves)"
        ) from e
    return best


def report(run_or_dir, save: bool = True) -> Report:
    """Build the report figures of a Run or a run folder; with `save`, write them as PNG there.

    >>> nbt.viz.report("runs/demo")     # doctest: +SKIP  (in a notebook: the figures, inline)
    """
    if not isinstance(run_or_dir, Run) and run_path(run_or_dir).is_file():
        raise ValueError(
            f"report takes a Run or a run folder; {run_path(run_or_dir)} is a file: pass its folder "
            f"{run_path(run_or_dir).parent}"
        )
    run = run_or_dir if isinstance(run_or_dir, Run) else Run.load(run_or_dir)
    figures = {
        "loss_curve": loss_figure(run),
        "learning_curves": learning_figure(run),
        "grad_norms": grad_norm_figure(run),
    }
    best_val = Path(run.run_dir) / BEST_VAL_FILE
    best = _best_val(best_val) if best_val.is_file() else None
    classes = class_names(run.meta)  # a run on the user's folder names them (a regression run: targets)
    if best is not None and "dice_per_case" in best:  # segmentation: Dice per case, no logits kept
        figures["dice_per_case"] = dice_figure(best)
    elif best is not None and "logits" not in best:  # regression (or regression heads): no class scores
        figures |= task_figures(best, classes)  # predicted vs true, residuals
        log.info(
            "%s holds no class logits (task %s): no confusion matrix or ROC", best_val, run.task.get("name")
        )
    elif best is not None:
        targets, logits = best["targets"].numpy(), best["logits"].float().numpy()
        figures["confusion_matrix"] = confusion_figure(
            targets, logits, run.config.threshold, best["epoch"], classes
        )
        figures["roc_curve"] = roc_figure(targets, logits, best["epoch"], run.config.threshold, classes)
        pr = pr_figure(targets, logits, best["epoch"], run.config.threshold, classes)
        if pr is not None:
            figures["pr_curve"] = pr
    elif not best_val.is_file():
        log.info("%s not found: no confusion matrix or ROC (no epoch has finished)", best_val)
    paths = {}
    if save:
        for name, fig in figures.items():
            paths[name] = Path(run.run_dir) / f"{name}.png"
            fig.savefig(paths[name], dpi=100)
    return Report(figures, paths)
