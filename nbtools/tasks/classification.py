"""Classification as a task: its monitors and their direction, and its validation metrics from the main
output's logits (`classification_metrics`, scikit-learn). The logits of a validation set are (N, C):
small, so they are kept on the device for the pass and read once, and best_val.pt keeps them for the
report's confusion matrix and ROC."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nbtools.losses import main_output
from nbtools.tasks.classification_metrics import classification_metrics

MONITOR = "val_loss"
MONITORS = {
    "val_loss": "min",
    "val_acc": "max",
    "val_precision": "max",
    "val_recall": "max",
    "val_f1": "max",
    "val_auc": "max",
}
# what classification_metrics returns besides the monitors (val_confusion, val_pos_rate, ...)
RECORDED = ("acc", "precision", "recall", "f1", "auc", "pred_pos_rate", "pos_rate", "confusion", "threshold",
            "opt_threshold", "opt_f1")  # fmt: skip


def _identity(t: torch.Tensor, how: str) -> torch.Tensor:
    return t


class ClassificationAccumulator:
    """A validation pass of a classifier: `update` keeps the main output's logits (float32) and the
    targets on the device, `result` reads them once and gives classification_metrics' values.

    threshold: the decision threshold of binary metrics (TrainConfig.threshold)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, outputs, targets: torch.Tensor) -> None:
        self._logits.append(main_output(outputs).detach().float())
        self._targets.append(targets.detach())

    def result(self, prefix: str = "val_", gather: Callable = _identity) -> tuple[dict, dict]:
        """({prefix}acc, ..._auc, ...}, {"logits", "targets"} on the CPU for best_val.pt). gather(t, how):
        each rank's rows concatenated (how "cat"; identity on one process)."""
        if not self._logits:
            raise ValueError("the validation data is empty; pass a dataset with at least one sample")
        logits = gather(torch.cat(self._logits), "cat").cpu()
        targets = gather(torch.cat(self._targets), "cat").cpu()
        metrics = classification_metrics(targets.numpy(), logits.numpy(), self.threshold)
        return {f"{prefix}{k}": v for k, v in metrics.items()}, {"logits": logits, "targets": targets}
