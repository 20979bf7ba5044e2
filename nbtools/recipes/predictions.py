"""`Predictions`: what `nbt.predict` returns, one row per sample, and its CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbtools.atomic import replace_atomic
from nbtools.runs import classification_metrics


@dataclass
class Predictions:
    """Per-sample class probabilities of a model on a dataset.

    probs: (N, C) float64, each row sums to 1 (a one-logit binary model gives C = 2: 1 - p, p).
    logits: (N, K) float32, what `classification_metrics` takes: the model's main output, or with TTA
    the logit (binary) or log-probability of the flip-averaged probabilities. classes: the C class
    names (class i is column i). threshold: binary tasks predict class 1 when its probability >=
    threshold (the run's `TrainConfig.threshold`); None with more classes (argmax). labels: (N,) int64
    true labels, or None when the data has none. paths: the file of each sample, or None.

    >>> preds = nbt.predict("runs/mine", "new_volumes")        # doctest: +SKIP
    >>> preds.to_csv("predictions.csv")                        # doctest: +SKIP
    """

    probs: np.ndarray
    logits: np.ndarray
    classes: list[str]
    threshold: float | None = None
    labels: np.ndarray | None = None
    paths: list[str] | None = None
    tta: bool = False
    weights: str | None = None  # which weights of the run ("best", "best_ema", "last"), None for a model

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def predicted(self) -> np.ndarray:
        """(N,) int64: the predicted class of each sample."""
        if self.threshold is not None:
            return (self.probs[:, 1] >= self.threshold).astype(np.int64)
        return self.probs.argmax(axis=1).astype(np.int64)

    @property
    def predicted_classes(self) -> list[str]:
        return [self.classes[i] for i in self.predicted]

    def metrics(self) -> dict:
        """classification_metrics of the labels against these predictions (as `fit` records them
        for validation, without the loss). Raises ValueError when the data had no labels."""
        if self.labels is None:
            raise ValueError(
                "these predictions have no labels (the data was unlabelled); metrics need labels"
            )
        return classification_metrics(self.labels, self.logits, self.threshold or 0.5)

    def rows(self) -> list[dict[str, object]]:
        """One dict per sample: path (or index, when the data does not know its files), label (when
        known), predicted (the class name), prob_<class> for each class, and what made `predicted`:
        weights (the run's "best", "best_ema" or "last"; None for a model passed in) and threshold
        (class 1 at prob >= threshold; None for more classes: the most probable)."""
        rows = []
        for i, pred in enumerate(self.predicted):
            row: dict[str, object] = {"path": self.paths[i]} if self.paths is not None else {"index": i}
            if self.labels is not None:
                row["label"] = self.classes[self.labels[i]] if 0 <= self.labels[i] < len(self.classes) else ""
            row["predicted"] = self.classes[pred]
            row.update({f"prob_{c}": float(p) for c, p in zip(self.classes, self.probs[i])})
            row.update(weights=self.weights, threshold=self.threshold)
            rows.append(row)
        return rows

    def to_csv(self, path: str | Path) -> Path:
        """Write `rows()` as CSV (header: path, label, predicted, prob_<class>..., weights, threshold;
        plain columns, so pandas.read_csv and csv.DictReader read it as is; an empty cell for None),
        atomically: a crash leaves the old file or the new one. Returns the path."""
        rows = self.rows()
        probs = [f"prob_{c}" for c in self.classes]
        columns = list(rows[0]) if rows else ["path", "predicted", *probs, "weights", "threshold"]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format(v, ".8g") if isinstance(v, float) else v for k, v in row.items()})
        return replace_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def __repr__(self) -> str:
        counts = Counter(self.predicted_classes)
        per = ", ".join(f"{c}: {counts.get(c, 0)}" for c in self.classes)
        extra = f", {self.weights} weights" if self.weights else ""
        extra += f", threshold {self.threshold:g}" if self.threshold is not None else ""
        extra += ", TTA" if self.tta else ""
        if self.labels is not None and len(self):
            extra += f", accuracy {float((self.predicted == self.labels).mean()):.4f} on the known labels"
        return f"Predictions({len(self)} samples, predicted {{{per}}}{extra})"
