"""`nbt.viz.report(run)`: the figures of a finished (or running) run, saved as PNG in its folder.

loss_curve.png and learning_curves.png (nbtools.viz.curves), grad_norms.png (total and per group,
log scale, skipped steps marked; loss scale and skips per interval), and from best_val.pt (the
validation logits at the best epoch) confusion_matrix.png and roc_curve.png.
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
from sklearn.metrics import auc, roc_curve

from nbtools.runs import Run, classification_metrics, probabilities
from nbtools.runs.files import BEST_VAL_FILE
from nbtools.viz import panels
from nbtools.viz.curves import learning_figure, loss_figure

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


def confusion_figure(targets: np.ndarray, logits: np.ndarray, threshold: float, epoch: int) -> Figure:
    cm = np.asarray(classification_metrics(targets, logits, threshold)["confusion"])
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ticks = range(len(cm))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true")
    ax.set_title(
        f"confusion matrix, best epoch {epoch}" + (f" (threshold {threshold:g})" if len(cm) == 2 else "")
    )
    fig.colorbar(im, ax=ax)
    return fig


def roc_figure(targets: np.ndarray, logits: np.ndarray, epoch: int) -> Figure:
    """Binary: the positive class's ROC. More classes: one-vs-rest per class."""
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    p = probabilities(logits)
    scores = {1: p if p.ndim == 1 else p[:, 1]} if p.ndim == 1 or p.shape[1] == 2 else dict(enumerate(p.T))
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for k, score in scores.items():
        if len(np.unique(y == k)) < 2:
            log.info("ROC for class %d skipped: the validation set has only one of its two sides", k)
            continue
        fpr, tpr, _ = roc_curve(y == k, score)
        ax.plot(fpr, tpr, label=f"class {k} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="gray")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, best epoch {epoch}")
    ax.legend(fontsize=8)
    return fig


def report(run_or_dir, save: bool = True) -> Report:
    """Build the report figures of a Run or a run folder; with `save`, write them as PNG there.

    >>> nbt.viz.report("runs/demo")     # doctest: +SKIP  (in a notebook: the figures, inline)
    """
    run = run_or_dir if isinstance(run_or_dir, Run) else Run.load(run_or_dir)
    figures = {
        "loss_curve": loss_figure(run),
        "learning_curves": learning_figure(run),
        "grad_norms": grad_norm_figure(run),
    }
    best_val = Path(run.run_dir) / BEST_VAL_FILE
    if best_val.is_file():
        best = torch.load(best_val, map_location="cpu", weights_only=True)
        targets, logits = best["targets"].numpy(), best["logits"].float().numpy()
        figures["confusion_matrix"] = confusion_figure(targets, logits, run.config.threshold, best["epoch"])
        figures["roc_curve"] = roc_figure(targets, logits, best["epoch"])
    else:
        log.info("%s not found: no confusion matrix or ROC (no epoch has finished)", best_val)
    paths = {}
    if save:
        for name, fig in figures.items():
            paths[name] = Path(run.run_dir) / f"{name}.png"
            fig.savefig(paths[name], dpi=100)
    return Report(figures, paths)
