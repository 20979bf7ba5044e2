"""What TrainConfig(mlflow=...) costs a training loop, against a local SQLite store.

    python bench/mlflow_cost.py [--intervals 30] [--epochs 20]

Prints: the import of mlflow in a fresh interpreter (paid once per process, when a fit with mlflow starts;
`import nbtools` never pays it); creating a new store (MLflow's tables; once per database); and per epoch
the cost of MlflowLog.interval() (at each log interval: the record is kept) and MlflowLog.epoch(), which sends that epoch's telemetry records and its epoch record in one
log_batch, against the same values sent with one MlflowClient.log_metric call per metric, as a plain
loop would. Records have the keys fit's telemetry and epoch records have (2 parameter groups, binary task).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbtools as nbt
from nbtools.train.mlflow_log import MlflowLog
from nbtools.train.tensorboard import epoch_scalars, step_scalars


def interval_record(epoch: int, step: int) -> dict:
    groups = ("backbone", "classifier")
    return {
        "epoch": epoch,
        "step": step,
        "steps": 10,
        "loss": 0.5 / step,
        "grad_norm": 1.0,
        "grad_norm_max": 2.0,
        "skipped": 0,
        "scale": None,
        "drift": 1e-3,
        "param_norm": 10.0,
        "group_grad_norm": dict.fromkeys(groups, 0.7),
        "lr": dict.fromkeys(groups, 1e-4),
    }


def epoch_record(epoch: int, step: int) -> dict:
    metrics = ("loss", "acc", "precision", "recall", "f1", "auc")
    return {"epoch": epoch, "step": step, "train_loss": 0.4, **{f"val_{m}": 0.5 for m in metrics}}


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import mlflow.tracking; print(time.perf_counter() - t)"
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--intervals", type=int, default=30, help="telemetry records per epoch")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    print(f"import mlflow (fresh interpreter): {import_seconds():.2f} s")
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{folder}/mlflow.db"
    t = time.perf_counter()
    MlflowClient(uri).search_experiments()
    print(f"a new SQLite store (MLflow's tables): {time.perf_counter() - t:.2f} s")

    tracker = MlflowLog(folder / "run", nbt.TrainConfig(mlflow=uri))
    (folder / "run").mkdir()
    kept, batched, one_by_one, step = [], [], [], 0
    plain = MlflowClient(uri)
    plain_run = plain.create_run(plain.create_experiment("one-by-one")).info.run_id
    for epoch in range(1, args.epochs + 1):
        records = []
        for _ in range(args.intervals):
            step += 10
            records.append(interval_record(epoch, step))
        end = epoch_record(epoch, step)
        t = time.perf_counter()
        for r in records:
            tracker.interval(r)
        kept.append((time.perf_counter() - t) / len(records))
        t = time.perf_counter()
        tracker.epoch(end)
        batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        for r in records:
            for k, v in step_scalars(r).items():
                if v is not None:
                    plain.log_metric(plain_run, k, v, step=r["step"])
        for k, v in epoch_scalars(end).items():
            plain.log_metric(plain_run, k, v, step=end["step"])
        one_by_one.append(time.perf_counter() - t)
    tracker.close()
    n = sum(1 for v in step_scalars(records[0]).values() if v is not None) * args.intervals + len(
        epoch_scalars(end)
    )
    print(
        f"per epoch ({args.intervals} telemetry records + 1 epoch record, {n} metrics; median of {args.epochs}):"
    )
    print(f"  MlflowLog.interval (kept until the epoch end): {1e6 * statistics.median(kept):.1f} us a record")
    print(f"  MlflowLog.epoch (log_batch, then mlflow.json): {1e3 * statistics.median(batched[1:]):.1f} ms")
    print(f"  one log_metric call per metric:               {1e3 * statistics.median(one_by_one):.1f} ms")
    print(f"  first epoch (creates the MLflow run, logs the params): {1e3 * batched[0]:.1f} ms")


if __name__ == "__main__":
    main()
