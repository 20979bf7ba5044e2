"""`run_predictions`: the notebooks' predict cell. A trained recipe run predicts new files, or its own
validation set, and the predictions CSV is written next to the run.

On the validation set the metrics of the predictions are set beside the ones the run recorded at the
epoch of the weights used (best.pt: the best epoch): `predict` runs the same inference path as `fit`'s
validation, so without TTA they agree (on a CPU, exactly); a difference says the weights, the data or
the preprocessing are not what the run had.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from nbtools.recipes.predict import predict
from nbtools.recipes.predictions import Predictions
from nbtools.recipes.resume import load_job
from nbtools.runs import Run
from nbtools.runs.files import PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, run_path

METRICS = ("acc", "precision", "recall", "f1", "auc")
PREVIEW_ROWS = 10  # rows of the predictions shown; the CSV has them all


@dataclass
class RunPredictions:
    """What `run_predictions` returns: the Predictions, the CSV written, what was predicted and, on the
    validation set, the run's recorded metrics at the weights' epoch (`recorded`) beside these (`now`)."""

    predictions: Predictions
    csv: Path
    data: str  # the folder or CSV predicted, or "the validation set"
    weights: str
    epoch: int | None  # the epoch the weights hold
    recorded: dict[str, float | None] | None  # None: new data, nothing recorded to compare with
    now: dict[str, float | None] | None  # None: the data has no labels

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, recorded at the weights' epoch, now) for the validation set; [] for new data."""
        if self.recorded is None or self.now is None:
            return []
        return [(m, self.recorded.get(m), self.now.get(m)) for m in METRICS]

    def _head(self) -> str:
        p = self.predictions
        at = f" (epoch {self.epoch})" if self.epoch is not None else ""
        return (
            f"{len(p)} predictions on {self.data} with the {self.weights} weights{at}, written to {self.csv}"
        )

    def _summary(self) -> str:
        if self.comparison():
            same = all(_same(a, b) for _, a, b in self.comparison())
            tta = " (TTA changes them)" if self.predictions.tta else ""
            return (
                f"the same metrics as the run recorded at epoch {self.epoch}"
                if same
                else f"metrics differ from the ones the run recorded at epoch {self.epoch}{tta}"
            )
        if self.now is not None:
            return "on the known labels: " + ", ".join(f"{m} {_fmt(self.now.get(m))}" for m in METRICS)
        return repr(self.predictions)

    def __str__(self) -> str:
        lines = [self._head(), self._summary()]
        if self.comparison():
            lines.append(f"{'metric':<10}{'recorded':>10}{'now':>10}")
            lines += [f"{m:<10}{_fmt(a):>10}{_fmt(b):>10}" for m, a, b in self.comparison()]
        rows = self.predictions.rows()[:PREVIEW_ROWS]
        if rows:
            cols = list(rows[0])
            table = [cols, *([_fmt(r[c]) for c in cols] for r in rows)]
            widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
            lines += ["", *("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip() for t in table)]
            if len(self.predictions) > PREVIEW_ROWS:
                lines.append(f"... {len(self.predictions) - PREVIEW_ROWS} more rows in {self.csv.name}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        parts = [f"<p>{esc(self._head())}<br>{esc(self._summary())}</p>"]
        if self.comparison():
            rows = "".join(
                f"<tr><td>{m}</td><td>{_fmt(a)}</td><td>{_fmt(b)}</td></tr>" for m, a, b in self.comparison()
            )
            parts.append(f"<table><tr><th>metric</th><th>recorded</th><th>now</th></tr>{rows}</table>")
        preview = self.predictions.rows()[:PREVIEW_ROWS]
        if preview:
            head = "".join(f"<th>{esc(c)}</th>" for c in preview[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in r.values()) + "</tr>" for r in preview
            )
            more = len(self.predictions) - len(preview)
            tail = f"<p>... {more} more rows in {esc(self.csv.name)}</p>" if more > 0 else ""
            parts.append(f"<table><tr>{head}</tr>{body}</table>{tail}")
        return "".join(parts)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 1e-6)


def _recorded(run: Run, weights: str) -> tuple[int | None, dict[str, float | None]]:
    """The epoch the weights hold and the validation metrics the run recorded there."""
    epoch = {"best": run.best_epoch, "best_ema": run.best_ema_epoch, "last": run.epoch or None}[weights]
    prefix = "ema_val_" if weights == "best_ema" else "val_"
    record = next((h for h in run.history if h["epoch"] == epoch), {})
    return epoch, {m: record.get(prefix + m) for m in METRICS}


def run_predictions(
    run_or_dir: str | Path | Run,
    data: str | Path | Dataset | None = None,
    *,
    weights: str = "best",
    tta: bool = False,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
) -> RunPredictions:
    """Predict with a recipe run and write the CSV next to it.

    data: a folder or CSV of new files (or a Dataset), or None for the run's validation set (rebuilt as
    the run had it; on your files, checked against the run's record), whose metrics are then compared
    with the ones the run recorded at the weights' epoch. out: the CSV (default predictions.csv, or
    predictions_val.csv for the validation set, in the run folder). weights, tta, device: as `nbt.predict`.

    >>> nbt.recipes.run_predictions(RUN_DIR, "drive/MyDrive/new_volumes")   # doctest: +SKIP
    """
    run_dir = run_path(run_or_dir.run_dir if isinstance(run_or_dir, Run) else run_or_dir)
    record = Run.load(run_dir)
    if data is None:
        dataset, what = load_job(run_dir).val_data, "the validation set"
    else:
        dataset, what = (
            data,
            str(data) if isinstance(data, (str, Path)) else f"the {type(data).__name__} passed",
        )
    preds = predict(run_or_dir, dataset, weights=weights, tta=tta, device=device)
    csv = preds.to_csv(out or run_dir / (VAL_PREDICTIONS_FILE if data is None else PREDICTIONS_FILE))
    epoch, recorded = _recorded(record, weights)
    now = None
    if preds.labels is not None:
        metrics = preds.metrics()
        now = {m: metrics.get(m) for m in METRICS}
    return RunPredictions(preds, csv, what, weights, epoch, recorded if data is None else None, now)
