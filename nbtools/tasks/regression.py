"""Regression as a task: MAE, RMSE and R^2 over float targets of any shape, accumulated on the device;
what to monitor; the chance reference for the doctor; the shape check that torch does not make.

A sample's target may be a scalar, a vector or a matrix (seed 002's covariance): each of its K values is
one *output*. Per output j over the n validation samples, with e = prediction - target:

    mae_j = sum |e| / n      rmse_j = sqrt(sum e^2 / n)      r2_j = 1 - sum e^2 / sum (y - mean_j)^2

`val_mae`, `val_rmse`, `val_r2` are the plain means over outputs, as scikit-learn's
mean_absolute_error / root_mean_squared_error / r2_score with multioutput="uniform_average" (so val_rmse
is the mean of the per-output RMSEs, not the root of the pooled MSE). Where K <= PER_OUTPUT_MAX = 8 (and
K > 1) each output has its own `val_mae_<name>` ... (names given, else its index: "2" for a vector,
"0_1" for a matrix).

An output whose target is constant over the validation set (std <= CONSTANT_REL x |mean|, or exactly 0)
has no R^2: scikit-learn reports 1.0 or 0.0 there, torchmetrics 0.0, both silently. Here its r2 is NaN,
`val_r2` averages the outputs that have one (NaN when none has), and `val_r2_undefined` counts the
others (their names in `RegressionAccumulator.undefined`, and in a logged warning) for the doctor.

Sums are taken in float64 on the device, targets shifted by the training mean (the scaler's; without one,
the first batch's mean) so that an offset of 1e4 costs no precision; `compute` reads them once. With a
scaler the shift is the same on every rank, so `totals()` can be summed across ranks (torch.distributed
all_reduce) and handed to `compute`. (float64: fine on CPU and CUDA, not on Apple's MPS.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbtools.tasks.segmentation import metric_name

log = logging.getLogger(__name__)

MONITOR, MONITOR_MODE = "val_r2", "max"  # unit-free, and what the loss on standardised targets pursues
MONITORS = {"val_mae": "min", "val_rmse": "min", "val_r2": "max"}
TIE_BREAK = ("val_loss", "min")  # R^2 can saturate on a small set: ties go to the lower loss
PER_OUTPUT_MAX = 8
CONSTANT_REL = 1e-7  # float32 resolution (6e-8 to 1.2e-7 of a value): a spread below it is rounding noise
METRICS = ("mae", "rmse", "r2")
ROWS = ("n", "y", "y2", "abs_err", "sq_err", "chance_sq", "chance_abs", "chance_huber")


def check_pair(output: torch.Tensor, target: torch.Tensor, head: str | None = None) -> None:
    """Refuse a regression (output, target) pair that is not the same shape, before torch broadcasts it.

    MSELoss on outputs (B, 1) and targets (B,) broadcasts to (B, B): every prediction is compared with
    every target, the loss trains towards the batch mean, and torch says so only in a UserWarning.
    Integer targets are refused too (they are class labels, or need a cast)."""
    who = f"head {head!r}: " if head is not None else ""
    for what, t in (("outputs", output), ("targets", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}regression {what} must be a tensor, got {type(t).__name__}")
    if not target.is_floating_point():
        raise TypeError(
            f"{who}regression targets must be floating point, got {target.dtype} {tuple(target.shape)}; "
            "integer targets are class labels (task='classification'), or cast them with y.float()"
        )
    o, t = tuple(output.shape), tuple(target.shape)
    if o == t:
        return
    try:
        b = tuple(torch.broadcast_shapes(output.shape, target.shape))
    except RuntimeError:
        b = None
    if len(o) == 2 and o[1] == 1 and t == o[:1]:
        fix = (
            f"return one value per target: squeeze the model's output (out.squeeze(1), shape {t}), or give "
            f"the targets shape {o} (a 1-element tensor per sample from the dataset)"
        )
    else:
        fix = f"make the model's output the targets' shape (per sample: {t[1:]}), or reshape the targets"
    how = (
        f"torch would broadcast them to {b} and compare predictions with the wrong targets"
        if b is not None
        else "torch cannot pair them"
    )
    raise ValueError(f"{who}regression outputs {o} and targets {t} differ: {how}; {fix}")


def monitor_mode(name: str) -> str | None:
    """'min' or 'max' for a regression metric name: val_mae, val_rmse_0 (an output's), val_cov_r2 (a
    head's), ...; None for a name that is not one (val_r2_undefined is a count)."""
    parts = name.split("_")
    if parts[0] != "val" or parts[-1] == "undefined":
        return None
    found = next((p for p in parts[1:] if p in METRICS), None)
    return None if found is None else MONITORS[f"val_{found}"]


def _chance_kind(loss_fn) -> tuple[str | None, float]:
    """Which chance sum answers for `loss_fn` ("sq", "abs", "huber" or None) and Huber's delta."""
    if loss_fn is None or getattr(loss_fn, "reduction", "mean") != "mean":
        return None, 0.0
    if isinstance(loss_fn, nn.MSELoss):
        return "sq", 0.0
    if isinstance(loss_fn, nn.L1Loss) or (isinstance(loss_fn, nn.SmoothL1Loss) and loss_fn.beta == 0):
        return "abs", 0.0
    if isinstance(loss_fn, nn.HuberLoss):
        return "huber", float(loss_fn.delta)
    if isinstance(loss_fn, nn.SmoothL1Loss):
        return "huber", float(loss_fn.beta)
    return None, 0.0


def _as_float64(values, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device).reshape(-1)


class RegressionAccumulator:
    """MAE, RMSE and R^2 of a validation pass (module docstring), in the user's units.

    scaler: the training set's `TargetScaler` (nbtools.tasks.target_scaling). With it, `update` takes
        the model's outputs and the targets as the loss saw them, *standardised*, and maps both back
        with the training mean and std before accumulating; pass standardised=False if the run trains on
        raw targets and the scaler is only the chance reference. Without it: both in the user's units.
    names: one per output (K of them) for the per-output metrics, e.g. ["age", "volume"].
    loss_fn: the run's loss (torch's MSELoss, L1Loss, HuberLoss or SmoothL1Loss, reduction "mean"), for
        `chance_loss`: its value when every prediction is the training mean, over the targets seen, in the
        units the loss sees. Needs the scaler; None otherwise.

    >>> acc = RegressionAccumulator(scaler, loss_fn=nn.MSELoss())   # doctest: +SKIP
    >>> for x, y in val_loader:                                      # doctest: +SKIP
    ...     acc.update(model(x), scaler.standardise(y))              # outputs (B, 3), y (B, 3)
    >>> acc.compute(), acc.chance_loss                               # doctest: +SKIP
    ({'val_mae': 1.9, 'val_rmse': 2.5, 'val_r2': 0.71, 'val_r2_undefined': 0, 'val_mae_0': ...}, 1.02)
    """

    def __init__(self, scaler=None, *, standardised: bool | None = None, names=None, loss_fn=None) -> None:
        if standardised and scaler is None:
            raise ValueError("standardised=True needs the training set's scaler (TargetScaler) to undo it")
        self.scaler, self.loss_fn = scaler, loss_fn
        self.standardised = scaler is not None if standardised is None else bool(standardised)
        self.names = None if names is None else [str(n) for n in names]
        self._kind, self._delta = _chance_kind(loss_fn)
        self.reset()

    def reset(self) -> None:
        self._sums: torch.Tensor | None = None  # (len(ROWS), K) float64 on the device
        self._shift: torch.Tensor | None = None  # (K,) user units: the training mean, or the first batch's
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None  # scaler's (mean, std) on the device
        self.n, self.shape = 0, None
        self.per_output: dict[str, np.ndarray] | None = None  # after compute: mae, rmse, r2, std per output
        self.undefined: list[str] = []  # after compute: outputs without an R^2 (constant targets)
        self.chance_loss: float | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """outputs, targets: (B, *shape) float, the same shape (`check_pair`), on the same device."""
        check_pair(outputs, targets)
        shape = tuple(targets.shape[1:])
        if self.shape is None:
            self._start(shape, targets.device)
        elif shape != self.shape:
            raise ValueError(f"targets of shape {shape} per sample after {self.shape}: one shape per run")
        b = len(targets)
        p, y = outputs.detach().reshape(b, -1).double(), targets.detach().reshape(b, -1).double()
        r = y  # the residual of predicting the training mean, in the loss's units: 0 standardised
        if self._stats is not None:
            mean, std = self._stats
            if self.standardised:
                p, y = p * std + mean, y * std + mean
            else:
                r = y - mean
        if self._shift is None:
            self._shift = y.mean(0)
        yc, e = y - self._shift, p - y
        rows = [torch.full_like(yc[0], b), yc.sum(0), (yc * yc).sum(0), e.abs().sum(0), (e * e).sum(0)]
        rows += [(r * r).sum(0), r.abs().sum(0)]
        if self._kind == "huber" and self._stats is not None:
            rows.append(F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=self._delta).sum(0))
        else:
            rows.append(torch.zeros_like(rows[0]))
        batch = torch.stack(rows)
        self._sums = batch if self._sums is None else self._sums + batch
        self.n += b

    def _start(self, shape: tuple[int, ...], device: torch.device) -> None:
        output_names(self.names, shape)  # refuses names that do not fit, at the first batch
        if self.scaler is not None:
            if tuple(self.scaler.shape) != shape:
                raise ValueError(
                    f"targets have shape {shape} per sample but the scaler was fitted on {tuple(self.scaler.shape)}"
                )
            self._stats = (_as_float64(self.scaler.mean, device), _as_float64(self.scaler.std, device))
            self._shift = self._stats[0]
        self.shape = shape

    def totals(self) -> torch.Tensor:
        """(len(ROWS), K) float64 sums on the device, additive across ranks when a scaler is given."""
        if self._sums is None:
            raise ValueError("no validation samples: call update() with at least one batch before compute()")
        return self._sums

    def compute(self, prefix: str = "val_", totals: torch.Tensor | None = None) -> dict[str, float]:
        """{prefix}mae, {prefix}rmse, {prefix}r2, {prefix}r2_undefined and, for 1 < K <= 8 outputs,
        {prefix}<metric>_<output>. One host read. Also sets `per_output`, `undefined`, `chance_loss`.
        totals: `totals()` summed over every rank (DDP; needs a scaler), instead of this rank's own."""
        if totals is not None and self._stats is None:
            raise ValueError("totals from several ranks need a common shift: give the accumulator the scaler")
        rows = self.totals() if totals is None else totals
        host = torch.cat([rows.flatten(), self._shift]).cpu().numpy()
        k = self._shift.numel()
        s = dict(zip(ROWS, host[:-k].reshape(len(ROWS), k)))
        shift, n = host[-k:], s["n"][0]
        mean = shift + s["y"] / n
        ss_tot = np.maximum(s["y2"] - s["y"] ** 2 / n, 0.0)  # >= 0 up to rounding
        std = np.sqrt(ss_tot / n)
        constant = (std == 0) | (std <= CONSTANT_REL * np.abs(mean))
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(constant, np.nan, 1.0 - s["sq_err"] / ss_tot)
        mae, rmse = s["abs_err"] / n, np.sqrt(s["sq_err"] / n)
        names = output_names(self.names, self.shape)
        self.per_output = {"mae": mae, "rmse": rmse, "r2": r2, "mean": mean, "std": std}
        self.undefined = [names[j] for j in np.flatnonzero(constant)]
        defined = r2[~constant]
        out = {
            f"{prefix}mae": float(mae.mean()),
            f"{prefix}rmse": float(rmse.mean()),
            f"{prefix}r2": float(defined.mean()) if defined.size else math.nan,
            f"{prefix}r2_undefined": int(constant.sum()),
        }
        if 1 < k <= PER_OUTPUT_MAX:
            for metric, values in (("mae", mae), ("rmse", rmse), ("r2", r2)):
                out |= {f"{prefix}{metric}_{name}": float(v) for name, v in zip(names, values)}
        if self.undefined:
            log.warning(
                "%sr2 leaves out %d of %d outputs whose target is constant over the %d validation samples "
                "(R^2 is undefined there): %s",
                prefix, len(self.undefined), k, int(n), ", ".join(self.undefined[:10]),
            )  # fmt: skip
        self.chance_loss = self._chance(s, n * k)
        return out

    def _chance(self, s: dict[str, np.ndarray], count: int) -> float | None:
        if self._kind is None or self._stats is None:
            return None
        total = {"sq": s["chance_sq"], "abs": s["chance_abs"], "huber": s["chance_huber"]}[self._kind].sum()
        if isinstance(self.loss_fn, nn.SmoothL1Loss):
            total = total / self._delta  # SmoothL1(beta) = Huber(delta=beta) / beta
        return float(total / count)


def chance_loss(loss_fn, targets: torch.Tensor, scaler, standardised: bool = True) -> float | None:
    """The loss of predicting the training mean for every sample of `targets` (N, *shape) in user units
    (e.g. every training target, `labels_of(train_ds)`), in the units the loss sees: the doctor's chance
    reference at the start of a run. None for a loss other than torch's MSE/L1/Huber/SmoothL1 ("mean")."""
    if _chance_kind(loss_fn)[0] is None:
        return None
    y = targets.detach().reshape(len(targets), -1).double()
    mean, std = _as_float64(scaler.mean, y.device), _as_float64(scaler.std, y.device)
    z = (y - mean) / std if standardised else y
    baseline = torch.zeros_like(z) if standardised else mean.expand_as(z)
    return float(loss_fn(baseline, z))


def output_names(names: Sequence[str] | None, shape: tuple[int, ...]) -> list[str]:
    """The name of each output of a target of `shape` per sample, as the per-output metrics spell it:
    `names` made safe ('grey matter' -> 'grey_matter'), else the index ("2"; "0_1" in a matrix)."""
    k = math.prod(shape)
    if names is None:
        return ["_".join(map(str, np.unravel_index(j, shape))) for j in range(k)]
    if len(names) != k:
        raise ValueError(
            f"names has {len(names)} entries for {k} outputs (targets {tuple(shape)} per sample)"
        )
    keys = [metric_name(n) for n in names]
    clash = [key for key in keys if not key or keys.count(key) > 1 or key == "undefined"]
    if clash:
        raise ValueError(
            f"output names {list(names)} give the metric names {keys}; rename {sorted(set(clash))}"
        )
    return keys
