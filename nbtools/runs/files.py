"""The names of the files in a run folder, in one place: whoever writes or reads one uses these.

config.json                 the TrainConfig of the latest session (JSON round-trip)
metrics.json                history, telemetry, findings, the stop, config changes, meta
epoch_026.pt                full training state after epoch 26
epoch_027_step_0001234.pt   full training state inside epoch 27, after optimizer step 1234
best.pt, best_ema.pt        model weights only, at the best epoch (of the EMA copy)
last.pt                     model weights only, written when `fit` returns
best_val.pt                 validation logits and targets at the best epoch (report figures)
*.png                       curves and report figures
predictions.csv             the predict cell's predictions on new files (predictions_val.csv: on the
                            validation set), written next to the run (nbtools.recipes.run_predictions)
events.out.tfevents.*       TensorBoard scalars (when tensorboard is installed), one file per session
mlflow.json                 the MLflow run this run logs to and what it has logged (TrainConfig.mlflow)
nbtools.lock                held while a process trains into the folder (pid, host, start time)
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
BEST_FILE = "best.pt"
BEST_EMA_FILE = "best_ema.pt"
LAST_FILE = "last.pt"
BEST_VAL_FILE = "best_val.pt"
LOSS_CURVE_FILE = "loss_curve.png"
LEARNING_CURVES_FILE = "learning_curves.png"
PREDICTIONS_FILE = "predictions.csv"
VAL_PREDICTIONS_FILE = "predictions_val.csv"
MLFLOW_FILE = "mlflow.json"

LOCK_FILE = "nbtools.lock"  # not a run file: overwrite=True leaves it, the holder removes it

TENSORBOARD_GLOB = "events.out.tfevents.*"
CHECKPOINT_GLOB = "epoch_*.pt"
CHECKPOINT_NAME = re.compile(r"^epoch_(\d{3,})(?:_step_(\d{7,}))?\.pt$")

# What `fit(..., overwrite=True)` deletes: everything a run writes, nothing else in the folder.
RUN_FILES = (
    CHECKPOINT_GLOB,
    BEST_FILE,
    BEST_EMA_FILE,
    LAST_FILE,
    BEST_VAL_FILE,
    METRICS_FILE,
    CONFIG_FILE,
    "*.png",
    TENSORBOARD_GLOB,
    MLFLOW_FILE,
    PREDICTIONS_FILE,
    VAL_PREDICTIONS_FILE,
)


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def mid_epoch_name(epoch: int, step: int) -> str:
    return f"epoch_{epoch:03d}_step_{step:07d}.pt"


def run_path(run_dir: str | Path) -> Path:
    """A run folder as an absolute path with `~` expanded: messages name it whole (a notebook may
    have `%cd`-ed elsewhere) and "~/runs/demo" is the home folder, not a folder named "~"."""
    return Path(run_dir).expanduser().absolute()


# What makes a folder hold a run, for `fit(resume=None)` to refuse: RUN_FILES by their exact names (a
# folder of the user's own PNGs, or of predictions alone, is no run).
_NOT_MARKERS = ("*.png", PREDICTIONS_FILE, VAL_PREDICTIONS_FILE)
RUN_MARKERS = (*(p for p in RUN_FILES if p not in _NOT_MARKERS), LOSS_CURVE_FILE, LEARNING_CURVES_FILE)


def run_files(run_dir: Path) -> list[Path]:
    """The files in `run_dir` that show a run was there (RUN_MARKERS), sorted by name."""
    if not run_dir.is_dir():
        return []
    return sorted({p for pattern in RUN_MARKERS for p in run_dir.glob(pattern) if p.is_file()})
