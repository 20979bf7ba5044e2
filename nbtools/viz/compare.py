"""`nbt.viz.compare_curves`: one metric of several runs in one figure, each run's resumes marked.

The runs are read from their folders' metrics.json (as `nbt.compare_runs` reads them); a folder that
cannot be read is named under the plot, not drawn. A resume is marked where its session began, from
the run's record (`run.sessions`; older records: the resumes that changed the config).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nbtools.atomic import replace_atomic
from nbtools.runs import Run
from nbtools.runs.compare import find_runs

log = logging.getLogger(__name__)

AXES = ("epoch", "step")


class CurvesFigure(Figure):
    """A matplotlib Figure that a notebook shows as a PNG: without pyplot's inline backend, IPython
    shows a bare Figure as its text repr only."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _load(runs) -> tuple[list[Run], list[str]]:
    """The readable runs and, for the others, "name (why)"."""
    if isinstance(runs, Run):
        runs = [runs]
    elif isinstance(runs, (str, Path)):
        runs = find_runs(runs)[0]
    loaded, skipped = [], []
    for r in runs:
        if isinstance(r, Run):
            loaded.append(r)
            continue
        try:
            loaded.append(Run.load(r))
        except (OSError, KeyError, TypeError, ValueError) as e:  # no or broken metrics.json, another version
            why = "no metrics.json" if isinstance(e, FileNotFoundError) else "metrics.json unreadable"
            skipped.append(f"{Path(r).name} ({why})")
            log.warning("compare_curves: %s not drawn: %s", r, e)
    return loaded, skipped


def _series(run: Run, metric: str) -> tuple[list[dict], str] | None:
    """The records that hold `metric` (per epoch, else per telemetry interval) and which they are."""
    for records, kind in ((run.history, "epoch"), (run.steps, "interval")):
        if any(r.get(metric) is not None for r in records):
            return records, kind
    return None


def _epoch_at(run: Run, steps: np.ndarray) -> np.ndarray:
    """Global steps as fractional epochs, by the steps each epoch ended at (epoch 0 at step 0)."""
    ends = [(0, 0)] + [(h["step"], h["epoch"]) for h in run.history]
    return np.interp(steps, [s for s, _ in ends], [e for _, e in ends])


def _resume_steps(run: Run) -> list[int]:
    """The global step at each resume of `run`."""
    if run.sessions:
        return [s["step"] for s in run.resumes]
    return sorted({c["step"] for c in run.config_changes})  # older records: the resumes that changed it


def compare_curves(
    runs: str | Path | Iterable[str | Path | Run],
    metric: str = "val_loss",
    x: str = "epoch",
    path: str | Path | None = None,
) -> Figure:
    """One figure with `metric` of each run against epochs (or x="step", the global optimizer step),
    the points where a run was resumed circled on its curve, and a legend of run names.

    runs: a folder of run folders, one run folder, or a list of run folders or Runs (as
    `nbt.compare_runs` takes them). metric: a key of the epoch records (val_loss, val_auc, train_loss,
    ema_val_loss, ...) or of the telemetry (loss, grad_norm, ...). path: also write the figure there as
    PNG (atomically).

    >>> nbt.viz.compare_curves("runs", "val_auc", path="runs/val_auc.png")   # doctest: +SKIP
    """
    if x not in AXES:
        raise ValueError(f"x must be one of {', '.join(map(repr, AXES))}, got {x!r}")
    loaded, skipped = _load(runs)
    series = [(run, _series(run, metric)) for run in loaded]
    drawn = [(run, s) for run, s in series if s is not None]
    if loaded and not drawn:
        keys = sorted(
            {k for run in loaded for h in run.history for k in h} - {"epoch", "step", "lr", "seconds"}
        )
        raise ValueError(
            f"no run records {metric!r}; the epoch records hold {', '.join(keys) or 'nothing yet'}"
        )
    fig = CurvesFigure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (run, (records, kind)) in enumerate(drawn):
        pts = [(r["step"], r[metric]) for r in records if r.get(metric) is not None]
        steps, ys = np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)
        xs = steps if x == "step" else _epoch_at(run, steps)
        color = f"C{i % 10}"
        ax.plot(xs, ys, "o-" if kind == "epoch" else "-", ms=3, color=color, label=Path(run.run_dir).name)
        at = np.array(_resume_steps(run), dtype=float)
        if len(at) and len(xs):
            rx = at if x == "step" else _epoch_at(run, at)
            ry = np.interp(rx, xs, ys)  # on the curve, where the session began
            ax.scatter(rx, ry, s=90, facecolors="none", edgecolors=color, linewidths=1.5, zorder=3)
    if any(len(_resume_steps(run)) for run, _ in drawn):
        ax.scatter([], [], s=90, facecolors="none", edgecolors="gray", label="resumed here")
    missing = [Path(run.run_dir).name for run, s in series if s is None]
    notes = [
        f"not drawn: {', '.join(skipped)}" * bool(skipped),
        f"no {metric}: {', '.join(missing)}" * bool(missing),
    ]
    ax.set(xlabel=x, ylabel=metric, title=f"{metric} by {x}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn:
        ax.legend(fontsize=8)
    note = "; ".join(n for n in notes if n)
    if note:
        fig.supxlabel(note, fontsize=8, color="gray")
    if path is not None:
        replace_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig
