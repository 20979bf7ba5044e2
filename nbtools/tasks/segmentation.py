"""Segmentation as a task: Dice per case and foreground class, accumulated on the device; what to
monitor; chance references for the doctor; what predict writes per case.

Dice of a case and class is 2 tp / (2 tp + fp + fn) from integer voxel counts. The policy for a class
whose mask is empty in a case (`empty`):

- "monai" (default): NaN, whatever was predicted, as MONAI's ``DiceMetric(ignore_empty=True)`` (its
  default): a false positive on a case without that structure costs nothing. The count of such pairs that
  had predicted voxels is still recorded (``dice_empty_predicted``) so it cannot go unseen.
- "nnunet": NaN only when the mask and the prediction are both empty, as nnU-Net's per-case evaluation;
  a false positive on an empty mask scores 0.

NaN values are left out of every mean and counted (``dice_left_out``). `val_dice` is the mean over cases
of each case's mean over its foreground classes (MONAI's reduction "mean": every case weighs the same,
however many of its classes are defined); ``val_dice_<class>`` the mean over cases for one class (MONAI's
"mean_batch"); NaN when nothing is left to average (MONAI gives 0 there). Others differ:
segmentation_models_pytorch's f1_score leaves nothing out: an empty-in-both pair scores ``zero_division``
(1.0 by default; "warn" gives 0), a false positive on an empty mask 0, and its reductions average per
image ("-imagewise") or pool the counts of the whole set; fastai's DiceMulti pools each class's
intersection and union over the whole validation set (one Dice per class, background included, NaN for a
class absent from masks and predictions alike) and averages the classes: no per-case Dice at all.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from nbtools.losses import main_output

log = logging.getLogger(__name__)

MONITOR, MONITOR_MODE = "val_dice", "max"  # what best.pt and early stopping follow
TIE_BREAK = ("val_loss", "min")  # Dice saturates (1.0 on a small set): ties go to the lower loss
EMPTY_POLICIES = ("monai", "nnunet")
COUNT_NAMES = ("left_out", "empty_predicted")  # val_dice_<these> are counts, not Dice


def is_segmentation_pair(output: torch.Tensor, target: torch.Tensor) -> bool:
    """True when a main output (B, C, *spatial) and a target fit segmentation: an integer class map
    (B, *spatial) or (B, 1, *spatial) with at least one spatial dim (how `fit` tells the task)."""
    if output.dim() < 3 or target.is_floating_point() or target.is_complex():
        return False
    spatial = tuple(output.shape[2:])
    return tuple(target.shape) in ((output.shape[0], *spatial), (output.shape[0], 1, *spatial))


def predicted_classes(outputs, num_classes: int) -> torch.Tensor:
    """Class map (B, *spatial) int64 from logits (B, C, *spatial) (argmax; C == 1: logit > 0, i.e.
    p > 0.5, read as classes 0/1), from a deep-supervision list (its main output), or an integer map as is."""
    z = main_output(outputs)
    if not z.is_floating_point():
        return z.long()
    channels = z.shape[1] if z.dim() >= 3 else 0
    if channels == 1 and num_classes == 2:
        return (z[:, 0] > 0).long()
    if channels != num_classes:
        raise ValueError(
            f"segmentation outputs must be logits (B, {num_classes}, *spatial) for {num_classes} classes "
            f"(or (B, 1, *spatial) for 2), got {tuple(z.shape)}"
        )
    return z.argmax(dim=1)


def confusion_counts(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 3 * C + 2) int64 on the device, no host sync: tp, fp, fn of each class (class-major), then the
    voxels of `truth` and of `pred` outside 0..C-1. pred, truth: (B, *spatial) integer class maps."""
    if truth.dim() == pred.dim() + 1 and truth.shape[1] == 1:
        truth = truth.squeeze(1)
    if truth.shape != pred.shape:
        raise ValueError(
            f"masks {tuple(truth.shape)} do not fit predictions {tuple(pred.shape)}; "
            f"expected {tuple(pred.shape)} or {(pred.shape[0], 1, *pred.shape[1:])}"
        )
    if truth.is_floating_point() or truth.is_complex():
        raise TypeError(
            f"masks must be integer class maps, got {truth.dtype}; a float mask is usually a label "
            "map resampled with linear interpolation: resample masks by nearest neighbour and store "
            "them as integers"
        )
    dims = tuple(range(1, pred.dim()))
    cols, truth_in, pred_in = [], 0, 0
    for c in range(num_classes):  # one class at a time: memory of one (B, *spatial) map, not C of them
        p, t = pred == c, truth == c
        tp, n_pred, n_truth = (p & t).sum(dims), p.sum(dims), t.sum(dims)
        cols += [tp, n_pred - tp, n_truth - tp]
        truth_in, pred_in = truth_in + n_truth, pred_in + n_pred
    voxels = math.prod(pred.shape[1:])
    return torch.stack([*cols, voxels - truth_in, voxels - pred_in], dim=1)


def dice_scores(counts: np.ndarray, empty: str = "monai") -> np.ndarray:
    """(N, C) Dice per case and class (background included) from (N, C, 3) tp/fp/fn; NaN where
    `empty` says."""
    tp, fp, fn = (counts[..., i].astype(np.float64) for i in range(3))
    undefined = (tp + fn == 0) if empty == "monai" else (tp + fp + fn == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (2 * tp + fp + fn)
    return np.where(undefined, np.nan, dice)


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def mean_dice(dice: np.ndarray) -> float:
    """val_dice from (N, K) Dice per case and foreground class: the mean over cases of each case's mean
    over its defined classes, NaN left out at both steps (MONAI's DiceMetric reduction "mean")."""
    defined = ~np.isnan(dice)
    per_case = np.where(defined, dice, 0.0).sum(1) / np.maximum(defined.sum(1), 1)
    return _mean(np.where(defined.any(1), per_case, np.nan))


def metric_name(class_name: str) -> str:
    """'grey matter' -> 'grey_matter': the part after `val_dice_` in the metric names."""
    return re.sub(r"\W+", "_", str(class_name)).strip("_")


class DiceAccumulator:
    """Dice per case and foreground class over a validation pass: `update` per batch keeps tp/fp/fn per
    case on the device (3 * C + 2 integers a case, never the logits), `compute` reads them once.

    class_names: one per class, background first (index 0), e.g. dataset.json's labels; default
    "background", "1", "2", .... empty: "monai" or "nnunet" (module docstring).

    >>> acc = DiceAccumulator(3, ["background", "grey matter", "white matter"])
    >>> for x, y in val_loader:                                     # doctest: +SKIP
    ...     acc.update(model(x), y)                                  # logits (B, 3, D, H, W), y (B, D, H, W)
    >>> acc.compute()                                                # doctest: +SKIP
    {'val_dice': 0.71, 'val_dice_grey_matter': 0.68, 'val_dice_white_matter': 0.74, ...}
    """

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, empty: str = "monai"
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "num_classes must be an int >= 2 (background and at least one structure), "
                f"got {num_classes!r}"
            )
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
        names = ["background", *map(str, range(1, num_classes))] if class_names is None else list(class_names)
        if len(names) != num_classes:
            raise ValueError(
                f"class_names has {len(names)} names for {num_classes} classes (background first): {names}"
            )
        keys = [metric_name(n) for n in names[1:]]
        clash = [k for k in keys if not k or keys.count(k) > 1 or k in COUNT_NAMES]
        if clash:
            raise ValueError(
                f"class names {names[1:]} give the metric names {keys}; {clash} is empty, repeated or one of "
                f"{COUNT_NAMES}: rename those classes"
            )
        self.num_classes, self.class_names, self.empty = num_classes, names, empty
        self._batches: list[torch.Tensor] = []
        # after compute: (N, C - 1) Dice per case, NaN where undefined; (N, C, 3) tp/fp/fn (chance_dice's)
        self.per_case: np.ndarray | None = None
        self.tpfpfn: np.ndarray | None = None

    def update(self, outputs, targets: torch.Tensor) -> None:
        """outputs: logits (B, C, *spatial), a [main, aux...] list, or a predicted class map (B, *spatial);
        targets: integer masks (B, *spatial) or (B, 1, *spatial) on the same device."""
        pred = predicted_classes(outputs, self.num_classes)
        self._batches.append(confusion_counts(pred, targets, self.num_classes))

    def counts(self) -> torch.Tensor:
        """(N, 3 * C + 2) int64 on the device, one row per case in update order (to gather across ranks)."""
        if not self._batches:
            raise ValueError("no validation cases: call update() with at least one batch before compute()")
        return torch.cat(self._batches)

    def reset(self) -> None:
        self._batches, self.per_case, self.tpfpfn = [], None, None

    def compute(
        self, prefix: str = "val_", counts: torch.Tensor | np.ndarray | None = None
    ) -> dict[str, float]:
        """{prefix}dice, {prefix}dice_<class> per foreground class, {prefix}dice_left_out (NaN pairs left
        out), {prefix}dice_empty_predicted (pairs with an empty mask and predicted voxels). One host read.
        counts: rows read already or gathered from every rank (DDP), instead of this accumulator's own."""
        rows = self.counts() if counts is None else counts
        rows = rows if isinstance(rows, np.ndarray) else rows.cpu().numpy()
        c = self.num_classes
        for column, what in ((3 * c, "masks"), (3 * c + 1, "predictions")):
            bad = np.flatnonzero(rows[:, column])
            if bad.size:
                raise ValueError(
                    f"validation case {int(bad[0])} (in loader order) has {int(rows[bad[0], column])} "
                    f"voxels in its {what} outside the classes 0..{c - 1} ({bad.size} such cases); "
                    "check num_classes and the label values of the masks"
                )
        tpfpfn = rows[:, : 3 * c].reshape(-1, c, 3)
        dice = dice_scores(tpfpfn, self.empty)[:, 1:]
        self.per_case, self.tpfpfn = dice, tpfpfn
        truth_empty = tpfpfn[:, 1:, 0] + tpfpfn[:, 1:, 2] == 0
        out = {f"{prefix}dice": mean_dice(dice)}
        out |= {
            f"{prefix}dice_{metric_name(n)}": _mean(dice[:, i]) for i, n in enumerate(self.class_names[1:])
        }
        out[f"{prefix}dice_left_out"] = int(np.isnan(dice).sum())
        out[f"{prefix}dice_empty_predicted"] = int((truth_empty & (tpfpfn[:, 1:, 1] > 0)).sum())
        if math.isnan(out[f"{prefix}dice"]):
            log.warning(
                "%sdice is undefined: none of the %d validation cases has a foreground voxel in its mask%s",
                prefix, len(dice), " or its prediction" if self.empty == "nnunet" else "",
            )  # fmt: skip
        return out


def chance_dice(counts: np.ndarray, class_names: Sequence[str], empty: str = "monai") -> dict[str, float]:
    """val_dice of constant predictions, for the doctor: {class name: val_dice if every voxel were
    predicted as that class, "majority": the same for the class with the most voxels in the masks}.
    All background scores 0 (when any mask has foreground); all foreground of class k scores
    mean over cases of 2 n_k / (n_k + n) for class k and 0 for the others. counts: (N, C, 3) tp/fp/fn,
    `DiceAccumulator.tpfpfn` after compute."""
    truth = counts[..., 0] + counts[..., 2]  # (N, C) mask voxels per case and class
    voxels = truth.sum(1, keepdims=True)
    out = {}
    for k, name in enumerate(class_names):
        hit = np.arange(len(class_names)) == k
        constant = np.stack(
            [np.where(hit, truth, 0), np.where(hit, voxels - truth, 0), np.where(hit, 0, truth)], -1
        )
        out[str(name)] = mean_dice(dice_scores(constant, empty)[:, 1:])
    out["majority"] = out[str(class_names[int(truth.sum(0).argmax())])]
    return out


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml from a NIfTI affine in mm: |det(affine[:3, :3])| / 1000."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def case_summary(
    mask, class_names: Sequence[str], voxel_ml: float | None = None, truth=None, empty: str = "monai"
) -> dict[str, float]:
    """What predict writes for one case, per foreground class: voxels_<class>, ml_<class> (when the voxel
    volume is known, `voxel_volume_ml(affine)`), dice_<class> (when the true mask is known; NaN per `empty`).
    mask, truth: (*spatial) integer class maps (numpy or torch)."""
    pred = torch.as_tensor(np.asarray(mask)).unsqueeze(0)
    ref = pred if truth is None else torch.as_tensor(np.asarray(truth)).unsqueeze(0)
    rows = confusion_counts(pred, ref, len(class_names)).numpy()[0]
    c = len(class_names)
    if rows[3 * c + 1] or (truth is not None and rows[3 * c]):
        raise ValueError(f"mask values outside the classes 0..{c - 1} ({list(class_names)})")
    tpfpfn = rows[: 3 * c].reshape(1, c, 3)
    dice = dice_scores(tpfpfn, empty)[0]
    out: dict[str, float] = {}
    for k, name in enumerate(class_names[1:], start=1):
        key = metric_name(name)
        n = int(tpfpfn[0, k, 0] + tpfpfn[0, k, 1])  # predicted voxels of class k
        out[f"voxels_{key}"] = n
        if voxel_ml is not None:
            out[f"ml_{key}"] = n * voxel_ml
        if truth is not None:
            out[f"dice_{key}"] = float(dice[k])
    return out
