"""`HeadPredictions`: what `nbt.predict` returns for a run trained with a MultiTaskLoss (named heads), one
row per sample and one group of columns per head, each in its task's terms: a regression head's value in
the user's units (the run's training mean and std for that head undone), a classification head's class
and probabilities. The heads and their tasks are what fit recorded (run.task["heads"])."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from nbtools.atomic import replace_atomic
from nbtools.data.samples import sample_paths
from nbtools.step import Precision
from nbtools.tasks import RegressionAccumulator, TargetScaler


@dataclass
class HeadPredictions:
    """Per head: `values[head]` (N, K) float64, a regression head's predictions in user units, or a
    classification head's probabilities (N, C) (one logit: [1 - p, p]); `tasks[head]` its task;
    `targets[head]` the true values or class indices when the data has them (else absent).

    CSV columns per head: regression `predicted_<head>` (one output; `predicted_<head>_<j>` for more) and
    `target_<head>...`; classification `target_<head>`, `predicted_<head>` (the class index) and
    `prob_<head>_<class>` per class. Then weights.

    >>> preds = nbt.predict(run, val_data)            # doctest: +SKIP
    >>> preds.metrics()                                # doctest: +SKIP
    {'size_mae': 9.2, 'size_rmse': 12.0, 'size_r2': 0.93, 'count_acc': 0.88}
    """

    values: dict[str, np.ndarray]
    tasks: dict[str, str]
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[str] | None = None
    weights: str | None = None

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def predicted(self, head: str) -> np.ndarray:
        """A regression head's values (N, K); a classification head's class index (N,)."""
        v = self.values[head]
        return v if self.tasks[head] == "regression" else v.argmax(axis=1)

    def metrics(self) -> dict[str, float]:
        """<head>_mae, <head>_rmse, <head>_r2 for regression heads (fit's metrics), <head>_acc for
        classification heads, over the heads whose targets the data has."""
        out: dict[str, float] = {}
        for head, y in self.targets.items():
            if self.tasks[head] == "regression":
                acc = RegressionAccumulator()
                acc.update(
                    torch.from_numpy(self.values[head]), torch.from_numpy(y.reshape(self.values[head].shape))
                )
                out |= {
                    f"{head}_{k}": v for k, v in acc.compute(prefix="").items() if k in ("mae", "rmse", "r2")
                }
            else:
                out[f"{head}_acc"] = float((self.predicted(head) == y.reshape(-1)).mean())
        return out

    def rows(self) -> list[dict[str, object]]:
        rows = []
        for i in range(len(self)):
            row: dict[str, object] = {"path": self.paths[i]} if self.paths is not None else {"index": i}
            for head, task in self.tasks.items():
                v = self.values[head][i]
                if task == "regression":
                    names = [f"_{j}" for j in range(len(v))] if len(v) > 1 else [""]
                    if head in self.targets:
                        row.update(
                            {
                                f"target_{head}{n}": float(t)
                                for n, t in zip(names, self.targets[head][i].reshape(-1))
                            }
                        )
                    row.update({f"predicted_{head}{n}": float(p) for n, p in zip(names, v)})
                else:
                    if head in self.targets:
                        row[f"target_{head}"] = int(self.targets[head][i])
                    row[f"predicted_{head}"] = int(v.argmax())
                    row.update({f"prob_{head}_{k}": float(p) for k, p in enumerate(v)})
            row["weights"] = self.weights
            rows.append(row)
        return rows

    def to_csv(self, path: str | Path) -> Path:
        """Write `rows()` as CSV (floats to 8 significant digits), atomically. Returns the path."""
        rows = self.rows()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format(v, ".8g") if isinstance(v, float) else v for k, v in row.items()})
        return replace_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def __repr__(self) -> str:
        parts = [f"{h} ({t})" for h, t in self.tasks.items()]
        known = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics().items()) if self.targets else "no targets"
        return f"HeadPredictions({len(self)} samples, heads {', '.join(parts)}; {known})"


def _pick(outputs, head: str):
    if isinstance(outputs, dict):
        return outputs[head]
    if isinstance(outputs, (list, tuple)) and head.isdigit():
        return outputs[int(head)]
    raise TypeError(
        f"the model returned {type(outputs).__name__}; the run's heads are named ({head!r}): return a dict "
        "{head: output} from forward (tuple outputs need heads keyed 0, 1, ... in the MultiTaskLoss)"
    )


@torch.no_grad()
def predict_heads(
    model, data, task: dict, cfg, precision_state, device, batch_size, weights
) -> HeadPredictions:
    """Run `model` (in eval mode, under the run's precision: cfg.precision and the checkpoint's
    `precision_state`) over `data` (a Dataset or DataLoader of (input, {head: target}) or inputs alone) and
    gather every head's output, read by its recorded task (`task["heads"]`: {head: {"name",
    "target_scaler"?}}), and the targets the samples carry."""
    if isinstance(data, (str, Path)):
        raise ValueError(
            "this run has named heads (a MultiTaskLoss run of your own model); pass the data as a Dataset whose "
            f"samples are (input, {{head: target}}), as it trained on, not the path {str(data)!r}"
        )
    ds = data.dataset if isinstance(data, DataLoader) else data
    precision = Precision(cfg.precision, device)
    if precision_state:  # a fallback the run took applies here too
        precision.load_state_dict(precision_state)
    batch_size = batch_size or cfg.eval_batch_size or cfg.batch_size
    heads = task["heads"]
    outs: dict[str, list] = {h: [] for h in heads}
    tgts: dict[str, list] = {h: [] for h in heads}
    was_training = model.training
    model.eval()
    try:
        for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
            x, y = (
                (batch[0], batch[1]) if isinstance(batch, (list, tuple)) and len(batch) > 1 else (batch, None)
            )
            with precision.autocast():
                out = model(x.to(precision.device))
            for h in heads:
                outs[h].append(_pick(out, h).float().cpu())
                if isinstance(y, dict) and h in y:
                    tgts[h].append(torch.as_tensor(y[h]))
    finally:
        model.train(was_training)
    values, tasks, targets = {}, {}, {}
    for h, t in heads.items():
        z = torch.cat(outs[h]).double()
        z = z.reshape(len(z), -1)
        tasks[h] = t["name"]
        if t["name"] == "regression":
            scaler = TargetScaler.from_dict(t["target_scaler"]) if t.get("target_scaler") else None
            if scaler is not None:
                z = scaler.unstandardise(z.reshape(len(z), *scaler.shape)).reshape(len(z), -1)
            values[h] = z.numpy()
        else:
            p = torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1)
            values[h] = (torch.cat([1 - p, p], dim=1) if z.shape[1] == 1 else p).numpy()
        if tgts[h] and sum(len(b) for b in tgts[h]) == len(z):
            targets[h] = torch.cat(tgts[h]).double().numpy()
    paths = sample_paths(ds)
    return HeadPredictions(values, tasks, targets, [str(p) for p in paths] if paths else None, weights)
