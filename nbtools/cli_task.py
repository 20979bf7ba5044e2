"""The CLI's words for a run's task: the `--task` / `--targets` / `--regression-loss` flags of `train`, and
what `train` and `predict` print at the end (a regression run's MAE, RMSE and R^2 and target columns,
a classification run's accuracy, F1 and AUC and classes)."""

from __future__ import annotations

import argparse

from nbtools.recipes.regression_jobs import LOSSES, TASKS

SUMMARY = (
    "val_loss",
    "val_acc",
    "val_f1",
    "val_auc",
    "val_dice",
    "val_mae",
    "val_rmse",
    "val_r2",
)  # those a run has


def add_task_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--task", choices=TASKS, help="regression: --data is a path,target CSV (real-valued targets)"
    )
    train.add_argument(
        "--targets",
        nargs="+",
        metavar="COLUMN",
        help="regression: the target columns (default: all but path)",
    )
    train.add_argument(
        "--regression-loss", choices=tuple(LOSSES), help="regression: torch's loss (default mse)"
    )


def task_args(args: argparse.Namespace) -> dict:
    """The recipe arguments of the task flags given on the command line."""
    given = {"task": args.task, "targets": args.targets, "regression_loss": args.regression_loss}
    return {k: v for k, v in given.items() if v is not None}


def best_line(epoch, best: dict) -> str:
    return f"best epoch {epoch}: " + ", ".join(
        f"{k} {best[k]:.4f}" for k in SUMMARY if best.get(k) is not None
    )


def data_line(data: dict) -> str:
    """The classes of a classification run's data (the positive one marked), a regression run's targets."""
    if data.get("task") == "regression":
        return "targets: " + ", ".join(data["classes"])
    pos = data["positive"]
    named = (f"{i} {c}" + (" (positive)" if c == pos else "") for i, c in enumerate(data["classes"]))
    return "classes: " + ", ".join(named)


def metrics_line(preds) -> str | None:
    """What predict prints after its CSV: the metrics on the known labels or targets, None without."""
    if getattr(preds, "targets", None) is not None:  # RegressionPredictions
        m = preds.metrics()
        return ", ".join(f"{k} {m[k]:.4f}" for k in ("mae", "rmse", "r2"))
    if getattr(preds, "labels", None) is not None:
        m = preds.metrics()
        return ", ".join(f"{k} {m[k]:.4f}" for k in ("acc", "f1", "auc") if m.get(k) is not None)
    return None
