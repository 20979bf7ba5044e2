"""Monitor names: which metric names `TrainConfig.monitor` may take and their direction.

A run monitors what its task's validation records: val_loss and classification's val_acc ... val_auc,
segmentation's val_dice and val_dice_<class>, regression's val_mae / val_rmse / val_r2 (and per output,
val_mae_<output>), and for named heads (MultiTaskLoss) val_<head>_<metric>. Lower is better for a loss or
an error (loss, mae, rmse), higher for the rest; the tasks' own tables (nbtools.tasks.registry) agree, and
a test holds them to it. Whether the run records the name is checked when its task is known
(nbtools.tasks.registry.check_monitor).
"""

from __future__ import annotations

import re

# the monitors every run of a task has; a class's Dice (val_dice_<class>), an output's (val_mae_<output>) and
# a named head's metrics (val_<head>_<metric>) are monitors too (MONITOR_PATTERN)
MONITORS = ("val_loss", "val_acc", "val_precision", "val_recall", "val_f1", "val_auc", "val_dice", "val_mae",
            "val_rmse", "val_r2")  # fmt: skip
TASKS = ("auto", "classification", "segmentation", "regression")
METRIC_WORDS = ("loss", "acc", "precision", "recall", "f1", "auc", "dice", "mae", "rmse", "r2")
LOWER_IS_BETTER = ("loss", "mae", "rmse")  # the tasks' MONITORS dicts agree (tests/test_task_registry.py)
COUNTS = ("left_out", "empty_predicted", "undefined")  # val_dice_left_out ...: counts, not metrics
MONITOR_PATTERN = re.compile(
    r"^val_(?:(?P<head>[A-Za-z0-9]\w*?)_)?(?P<metric>" + "|".join(METRIC_WORDS) + r")(?:_(?P<part>\w+))?$"
)


def monitor_parts(name: str) -> dict[str, str | None] | None:
    """{"head", "metric", "part"} of a monitor name (val_cov_rmse: head cov, metric rmse), or None when it
    names no metric a task records."""
    m = MONITOR_PATTERN.match(name) if isinstance(name, str) else None
    if m is None or (m["part"] or "").endswith(COUNTS):
        return None
    return m.groupdict()


def monitor_mode(name: str) -> str:
    parts = monitor_parts(name)
    return "min" if parts is not None and parts["metric"] in LOWER_IS_BETTER else "max"
