"""`nbt.find_lr`: the LR range test (Leslie Smith; fastai's lr_find), on a copy of the model.

The LR grows exponentially from start_lr to end_lr over `steps` optimizer steps, one batch each
(every parameter group gets the same LR). The loss is smoothed with an exponential moving average
(beta `smooth` = 0.98, bias-corrected); the test stops early when the smoothed loss passes
`diverge` = 4 x its minimum, or the loss is non-finite.

Suggestion: `min_loss_lr / 10`, a decade below the LR at the smoothed minimum (fastai's "minimum"
rule): robust on small, noisy batches. `steepest_lr` is also given: where the smoothed loss falls
fastest against log10(LR) over spans of a tenth of the points, between the first 10 % of the
points and the minimum; on noisy curves it can land in the flat start. Both are starting points:
train, and look at the curve.

The optimizer: a copy of the one passed in (same class, hyperparameters and state, on the copy's
parameters), else Adam. The model and optimizer passed in, their state and the torch RNG come out
bit-identical; the data order comes from a seeded generator.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from nbtools.diagnose.sandbox import batches, isolated, model_device, preserved_rng
from nbtools.step import Precision, train_step


@dataclass(frozen=True)
class LRFinderResult:
    lrs: list[float]  # the LR of each step taken
    losses: list[float]  # the raw loss at each step
    smoothed: list[float]  # the bias-corrected moving average
    suggestion: float | None  # min_loss_lr / 10
    min_loss_lr: float | None  # the LR at the smoothed minimum
    steepest_lr: float | None  # steepest descent of the smoothed loss (None: < 5 points before the min)
    stopped: str  # why the test ended

    def figure(self) -> Figure:
        """Loss against LR (log x), the smoothed curve, the suggestion and min_loss_lr / 10."""
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, color="C0", alpha=0.3, lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", label="smoothed")
        if self.suggestion is not None:
            ax.axvline(
                self.suggestion, color="C3", ls="--", label=f"suggestion (min / 10) {self.suggestion:.2g}"
            )
        if self.steepest_lr is not None:
            ax.axvline(self.steepest_lr, color="C2", ls=":", label=f"steepest {self.steepest_lr:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=f"LR range test ({self.stopped})")
        if self.smoothed:
            lo, hi = min(self.smoothed), self.smoothed[0]
            ax.set_ylim(lo - 0.1 * abs(hi - lo), max(hi, lo) + 0.5 * abs(hi - lo) + 1e-12)
        ax.legend(fontsize=8)
        return fig

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    def __str__(self) -> str:
        s = "-" if self.suggestion is None else f"{self.suggestion:.2g}"
        m = "-" if self.steepest_lr is None else f"{self.steepest_lr:.2g}"
        return f"LR range test over {len(self.lrs)} steps ({self.stopped}): suggested lr {s} (steepest: {m})"


def _steepest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The LR in the middle of the steepest fall of the smoothed loss over spans of a tenth of the
    points (single-step differences follow batch noise), after the first tenth, before the minimum."""
    i_min, k = int(np.argmin(smoothed)), max(1, len(smoothed) // 10)
    starts = range(len(smoothed) // 10, i_min - k + 1)
    if len(starts) < 3:
        return None
    log_lr = np.log10(lrs)
    slopes = [(smoothed[i + k] - smoothed[i]) / (log_lr[i + k] - log_lr[i]) for i in starts]
    return lrs[starts[int(np.argmin(slopes))] + k // 2]


def find_lr(
    model: nn.Module,
    data,
    loss_fn: Callable,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 8,
    smooth: float = 0.98,
    diverge: float = 4.0,
    seed: int = 0,
    precision: str = "fp32",
) -> LRFinderResult:
    """Run the LR range test; `data` is a Dataset, a DataLoader or an iterable of (x, y) batches.
    Each step is `fit`'s step (nbtools.step.train_step) in `precision` ("fp32", "bf16", "fp16" or
    "auto", as TrainConfig.precision), without clipping.

    >>> res = nbt.find_lr(model, train_ds, loss_fn)   # doctest: +SKIP
    >>> res.suggestion, res.figure()                   # in a notebook `res` alone shows the plot
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if not 0 <= smooth < 1 or not diverge > 1:
        raise ValueError(f"need 0 <= smooth < 1 and diverge > 1, got smooth={smooth!r}, diverge={diverge!r}")
    device = model_device(model)
    work, opt = isolated(model, optimizer)
    work.train()
    if opt is None:
        opt = torch.optim.Adam([p for p in work.parameters() if p.requires_grad], lr=start_lr)
    prec = Precision(precision, device)
    growth = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, f"reached end_lr {end_lr:g}"
    with preserved_rng(device):
        for i, (x, y) in zip(range(steps), batches(data, batch_size, seed, device)):
            lr = start_lr * growth**i
            for group in opt.param_groups:
                group["lr"] = lr
            # The loss before this step's update, as the range test wants; the update of a step that
            # ends the test happens on the copy only.
            value = train_step(work, [(x, y)], loss_fn, opt, prec, clip_norm=None).loss.item()
            if not math.isfinite(value):
                stopped = f"non-finite loss at lr {lr:.2g}"
                break
            avg = smooth * avg + (1 - smooth) * value
            lrs.append(lr)
            losses.append(value)
            smoothed.append(avg / (1 - smooth ** (i + 1)))
            best = min(best, smoothed[-1])
            if smoothed[-1] > diverge * best:
                stopped = f"diverged at lr {lr:.2g}"
                break
    if not smoothed:
        return LRFinderResult(lrs, losses, smoothed, None, None, None, stopped)
    min_lr = lrs[int(np.argmin(smoothed))]
    return LRFinderResult(lrs, losses, smoothed, min_lr / 10, min_lr, _steepest(lrs, smoothed), stopped)
