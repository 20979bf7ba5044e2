"""`RegressionPredictions`: what `nbt.predict` returns for a regression run, one row per sample, in the
user's units, and its CSV: `predicted` (one column per output) and `target` when the data has targets."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nbtools.atomic import replace_atomic
from nbtools.data import RegressionFolder, VolumeFolder
from nbtools.data.samples import is_unlabelled, sample_paths
from nbtools.data.targets import read_targets
from nbtools.runs import Run, list_checkpoints, load_checkpoint
from nbtools.tasks import RegressionAccumulator, TargetScaler


@dataclass
class RegressionPredictions:
    """Per-sample predicted values of a regression model, in the user's units (the run's training mean and
    std undone: the model itself sees standardised targets).

    predicted: (N, K) float64. names: the K outputs' names (the run's target columns, e.g. ["age"]).
    targets: (N, K) float64 true values, or None when the data has none. paths: the file of each sample.
    CSV columns: with one output `predicted` (and `target`); with K > 1 `predicted_<name>` (and
    `target_<name>`) per output; then weights.

    >>> preds = nbt.predict("runs/ages", "new_scans.csv")   # doctest: +SKIP
    >>> preds.to_csv("predictions.csv"); preds.metrics()     # doctest: +SKIP
    {'mae': 3.1, 'rmse': 4.0, 'r2': 0.81, 'r2_undefined': 0}
    """

    predicted: np.ndarray
    names: list[str]
    targets: np.ndarray | None = None
    paths: list[str] | None = None
    tta: bool = False
    weights: str | None = None  # which weights of the run ("best", "best_ema", "last"), None for a model

    def __len__(self) -> int:
        return len(self.predicted)

    def columns(self, what: str) -> list[str]:
        """`what` ("predicted" or "target") for one output, else what_<name> per output."""
        return [what] if len(self.names) == 1 else [f"{what}_{n}" for n in self.names]

    def metrics(self) -> dict[str, float]:
        """mae, rmse, r2 (means over outputs, as fit's val_mae, val_rmse, val_r2 and scikit-learn's
        uniform average), r2_undefined and, for 2-8 outputs, each output's. ValueError without targets."""
        if self.targets is None:
            raise ValueError("these predictions have no targets (the data had none); metrics need targets")
        acc = RegressionAccumulator(names=self.names if len(self.names) > 1 else None)
        acc.update(torch.from_numpy(self.predicted), torch.from_numpy(self.targets))
        return acc.compute(prefix="")

    def rows(self) -> list[dict[str, object]]:
        """One dict per sample: path (or index), target column(s) when known, predicted column(s), weights."""
        rows = []
        for i in range(len(self)):
            row: dict[str, object] = {"path": self.paths[i]} if self.paths is not None else {"index": i}
            if self.targets is not None:
                row.update(zip(self.columns("target"), self.targets[i].tolist()))
            row.update(zip(self.columns("predicted"), self.predicted[i].tolist()))
            row["weights"] = self.weights
            rows.append(row)
        return rows

    def to_csv(self, path: str | Path) -> Path:
        """Write `rows()` as CSV (values to 8 significant digits; an empty cell for None), atomically."""
        rows = self.rows()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format(v, ".8g") if isinstance(v, float) else v for k, v in row.items()})
        return replace_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def __repr__(self) -> str:
        p = self.predicted
        spread = ", ".join(f"{n} {m:.4g} +- {s:.3g}" for n, m, s in zip(self.names, p.mean(0), p.std(0)))
        extra = f", {self.weights} weights" if self.weights else ""
        extra += ", TTA" if self.tta else ""
        if self.targets is not None and len(self):
            m = self.metrics()
            extra += f", MAE {m['mae']:.4g}, R2 {m['r2']:.3f} on the known targets"
        return f"RegressionPredictions({len(self)} samples, predicted {{{spread}}}{extra})"


def is_regression(meta: dict, config) -> bool:
    """A regression run: its config's task (fit records the inferred one), or its recipe's task argument."""
    return getattr(config, "task", None) == "regression" or meta.get("args", {}).get("task") == "regression"


def recorded_task(run_dir: str | Path) -> dict:
    """What fit recorded of a run's task (run.task: its name, the regression targets' scaler, ...): from
    the newest valid checkpoint, else metrics.json."""
    valid = list_checkpoints(run_dir).valid()
    if valid:
        return dict(load_checkpoint(valid[-1].path, mmap=True)["run"].get("task") or {})
    return dict(Run.load(run_dir).task or {})


def run_scaler(task: dict) -> TargetScaler | None:
    """The training targets' mean and std a regression run recorded (it trained on standardised targets;
    the model's outputs are standardised), or None for a run on raw targets."""
    recorded = task.get("target_scaler")
    return TargetScaler.from_dict(recorded) if recorded else None


def target_names(meta: dict, k: int) -> list[str]:
    """The run's target columns (its data's "classes"), else "0", "1", ... for k outputs."""
    names = (meta.get("data") or {}).get("classes")
    return [str(n) for n in names] if names and len(names) == k else [str(j) for j in range(k)]


def with_targets(data, files, names: list[str]):
    """The prediction data `files` (read with labels="auto"), with the CSV's target columns when `data` is a
    CSV that has every one of the run's `names` (then the predictions are compared with them); else as is."""
    path = Path(data)
    if path.suffix.lower() != ".csv":
        return files
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    if not set(names) <= set(header) and not (len(names) == 1 and "target" in header):
        return files
    columns = names if set(names) <= set(header) else ["target"]
    if isinstance(files, VolumeFolder):
        inner = VolumeFolder(path, shape=files.shape, labels="ignore", **_volume_options(files))
    else:
        inner = type(files)(path, files.size, labels="ignore")
    read_targets(path, columns)  # a bad target is named by row and file before any prediction
    return RegressionFolder(path, inner, columns)


def _volume_options(ds: VolumeFolder) -> dict:
    return {
        "normalize": ds.normalize,
        "mask_threshold": ds.mask_threshold,
        "resize": ds.resize,
        "npz_key": ds.npz_key,
    }


def regression_predictions(outputs, targets, ds, meta: dict, scaler: TargetScaler | None, tta: bool, weights):
    """RegressionPredictions from predict's outputs (B, K) (standardised when `scaler` is given: the run
    trained on standardised targets) and the data's targets (user units, when it has them)."""
    k = outputs.reshape(len(outputs), -1).shape[1]
    out = outputs.reshape(len(outputs), k).double()
    if scaler is not None:
        out = scaler.unstandardise(out.reshape(len(out), *scaler.shape)).reshape(len(out), k)
    known = targets.is_floating_point() and not is_unlabelled(ds) and targets.numel() == len(out) * k
    paths = sample_paths(ds)
    return RegressionPredictions(
        predicted=out.numpy(),
        names=target_names(meta, k),
        targets=targets.reshape(len(out), k).double().numpy() if known else None,
        paths=[str(p) for p in paths] if paths is not None else None,
        tta=tta,
        weights=weights,
    )
