"""`nbt.viz.grad_heatmap`: per-layer gradient norms over a few training steps, as a heatmap.

On demand, never inside `fit`: it trains a deep copy of the model for `steps` steps (a copy of the
optimizer passed in, with its state, else Adam at `lr`) and records, before each step, the gradient
norm of every layer (a module with parameters of its own, in registration order). It costs nothing
when not called; when called, one extra copy of the model and `steps` training steps. The model,
optimizer and torch RNG come out bit-identical. Look for rows that are ~0 (a frozen or dead
layer), rows that grow step after step (explosion starts there), and a band that jumps at once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import nn

from nbtools.diagnose.sandbox import batches, isolated, model_device, preserved_rng
from nbtools.step import Precision, train_step


@dataclass(frozen=True)
class GradHeatmap:
    layers: list[str]  # dotted module names
    norms: np.ndarray  # (layers, steps) gradient norm; NaN where a layer got no gradient
    losses: list[float]  # the loss at each step

    def figure(self) -> Figure:
        fig = Figure(figsize=(8, 0.8 + 0.22 * len(self.layers)), layout="constrained")
        ax = fig.add_subplot()
        shown = np.ma.masked_invalid(np.where(self.norms > 0, self.norms, np.nan))
        lo, hi = (shown.min(), shown.max()) if shown.count() else (1e-12, 1.0)
        im = ax.imshow(
            shown, aspect="auto", interpolation="nearest", cmap="viridis", norm=LogNorm(lo, max(hi, lo * 10))
        )
        ax.set_yticks(range(len(self.layers)), self.layers, fontsize=7)
        ax.set(xlabel="step", title="gradient norm per layer (log; blank = none or zero)")
        fig.colorbar(im, ax=ax)
        return fig

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=80)
        return buf.getvalue()


def grad_heatmap(
    model: nn.Module,
    data,
    loss_fn: Callable,
    steps: int = 20,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    precision: str = "fp32",
) -> GradHeatmap:
    """Gradient norm of every layer over `steps` training steps of a copy of `model`; `data` is a
    Dataset, a DataLoader or an iterable of (x, y) batches. lr is used only without `optimizer`.
    Each step is `fit`'s step (nbtools.step.train_step) in `precision` (as TrainConfig.precision),
    without clipping; the norms are of the unscaled gradients it stepped with.

    >>> nbt.viz.grad_heatmap(model, train_ds, loss_fn, steps=30)   # doctest: +SKIP  (shows the heatmap)
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    device = model_device(model)
    work, opt = isolated(model, optimizer)
    work.train()
    if opt is None:
        opt = torch.optim.Adam([p for p in work.parameters() if p.requires_grad], lr=lr)
    layers = [(n, list(m.parameters(recurse=False))) for n, m in work.named_modules()]
    layers = [(n or "(model)", ps) for n, ps in layers if ps]
    prec, columns = Precision(precision, device), []
    with preserved_rng(device):
        for _, (x, y) in zip(range(steps), batches(data, batch_size, seed, device)):
            # train_step leaves the step's gradients in .grad (it clears them when the next one starts)
            loss = train_step(work, [(x, y)], loss_fn, opt, prec, clip_norm=None).loss
            nan = torch.full((), float("nan"), device=device)
            norms = [
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                if (grads := [p.grad for p in ps if p.grad is not None])
                else nan
                for _, ps in layers
            ]
            columns.append(torch.stack([loss, *norms]).tolist())  # one host sync per step
    values = np.asarray(columns, dtype=np.float64)
    return GradHeatmap([n for n, _ in layers], values[:, 1:].T, values[:, 0].tolist())
