"""Per-term gradients: how hard each weighted loss term pulls on the shared trunk, and whether two terms
pull against each other. Meant for one step per telemetry interval, not every step.

For each weighted term L_i (a MultiTaskLoss head: weight * loss) this gives the norm of dL_i/dtheta and
the cosine between every pair of them, theta the *shared* parameters: those that two or more terms reach
in the autograd graph (found by walking it once, no gradient computed), or those under a name prefix.

How: `torch.autograd.grad(L_i, theta, retain_graph=True)` for each term, between the loss and the step's
own backward, reusing the step's forward and graph (a separate forward would cost a forward more and see
other BatchNorm statistics and dropout masks than the step it describes). Its cost is one partial backward
per term, down to theta. Hence the scopes (cost of a probe on two terms, in % of a step, two-head
ResNet-10-3D at half width, 32^3 and 48^3 volumes, batch 4, one CPU thread: `python bench/term_grads.py`):
- "last" (default): the nearest shared module with a weight of 2+ dims, as GradNorm takes the last
  shared layer's weights (a ResNet's last conv and its shortcut conv): 15-17 %;
- "nearest": the shared parameters nearest the heads whatever their shape (usually the last BatchNorm's
  scale and shift, a summary of the gradient on the shared features per channel): ~1 %;
- "all": every shared parameter: T backward passes through the trunk, 80-100 % for T = 2.
At one probe per log interval of 10 steps, "last" costs the run under 2 %.
Norms are taken in the loss's units: with an fp16 GradScaler pass its scale (the device tensor) so the
backward runs scaled, as the step's does, and the result is divided back. Nothing is read on the host
until `TermGrads.record()` (one read).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

SCOPES = ("nearest", "last", "all")


@dataclass
class TermGrads:
    """One probe's result, on the device: the norm of each term's gradient and their Gram matrix."""

    names: list[str]
    norms: torch.Tensor  # (T,) float32
    cosines: torch.Tensor  # (T, T) float32, NaN where a norm is 0
    params: str  # which parameters, e.g. "layer4.1.conv2 (1 tensors, 18432 values)"

    def record(self, weights: Mapping[str, float] | None = None) -> dict:
        """The telemetry fields (one host read): term_grad {name: norm}, term_cos {"a|b": cosine} for
        each pair in term order, term_params; term_weight {name: weight} when `weights` are given.
        Non-finite values are None."""
        t = len(self.names)
        rows, cols = zip(*itertools.combinations(range(t), 2))
        values = torch.cat([self.norms, self.cosines[list(rows), list(cols)]]).tolist()
        keep = [v if math.isfinite(v) else None for v in values]
        pairs = [f"{self.names[i]}|{self.names[j]}" for i, j in zip(rows, cols)]
        out = {
            "term_grad": dict(zip(self.names, keep[:t])),
            "term_cos": dict(zip(pairs, keep[t:])),
            "term_params": self.params,
        }
        if weights is not None:
            out["term_weight"] = {n: float(weights[n]) for n in self.names}
        return out


def _reached(root: torch.Tensor) -> dict[int, int]:
    """{id(leaf parameter): its depth} for every leaf the autograd graph of `root` reaches (BFS)."""
    if root.grad_fn is None:
        return {}
    depth: dict[int, int] = {}
    queue, seen = deque([(root.grad_fn, 0)]), {root.grad_fn}
    while queue:
        node, d = queue.popleft()
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            depth.setdefault(id(variable), d)
        for nxt, _ in node.next_functions:
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, d + 1))
    return depth


class TermGradProbe:
    """Per-term gradient norms and cosines on the shared parameters of `model` (module docstring).

    scope: "last", "nearest" or "all" (module docstring). prefix: take the parameters whose names start with it (e.g. "backbone.")
    as the shared set instead of finding them. The set is found at the first call and again when
    the model's trainable parameters change (an unfreeze).

    >>> probe = TermGradProbe(model)                                     # doctest: +SKIP
    >>> total, terms = loss_fn.with_terms(model(x), y)                   # MultiTaskLoss
    >>> found = probe({n: terms[n] for n in loss_fn.names})             # before total.backward()
    >>> total.backward(); optimizer.step()
    >>> found.record(loss_fn.weights)                                    # at the log interval
    {'term_grad': {'cov': 0.41, 'k': 0.03}, 'term_cos': {'cov|k': 0.12}, 'term_params': 'layer4.1.conv2 ...', ...}
    """

    def __init__(self, model: nn.Module, scope: str = "last", prefix: str | None = None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.model, self.scope, self.prefix = model, scope, prefix
        self._key: tuple | None = None
        self.names: list[str] = []  # the parameters probed, by name
        self._params: list[nn.Parameter] = []

    def _choose(self, terms: Mapping[str, torch.Tensor]) -> None:
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        reach = [_reached(t) for t in terms.values()]
        if self.prefix is not None:
            chosen = [(n, p) for n, p in named if n.startswith(self.prefix)]
            if not chosen:
                raise ValueError(
                    f"no trainable parameter of the model starts with prefix {self.prefix!r}; "
                    f"its first names: {[n for n, _ in named[:5]]}"
                )
        else:
            chosen = [(n, p) for n, p in named if sum(id(p) in r for r in reach) >= 2]
            if not chosen:
                raise ValueError(
                    f"the terms {list(terms)} share no trainable parameter: there is no trunk to compare their "
                    "gradients on (each head trains its own parameters only)"
                )
        if self.scope != "all":
            depth = {n: min(r.get(id(p), math.inf) for r in reach) for n, p in chosen}
            pool = [(n, p) for n, p in chosen if p.dim() >= 2 or self.scope == "nearest"] or chosen
            nearest = min(depth[n] for n, _ in pool)
            modules = {n.rpartition(".")[0] for n, _ in pool if depth[n] == nearest}
            chosen = [(n, p) for n, p in chosen if n.rpartition(".")[0] in modules]
        self.names, self._params = [n for n, _ in chosen], [p for _, p in chosen]

    def describe(self) -> str:
        modules = sorted({n.rpartition(".")[0] or "<model>" for n in self.names})
        shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more modules" if len(modules) > 3 else "")
        values = sum(p.numel() for p in self._params)
        return f"{self.scope}: {shown} ({len(self._params)} tensors, {values} values)"

    def __call__(
        self, terms: Mapping[str, torch.Tensor], scale: torch.Tensor | float | None = None
    ) -> TermGrads:
        """terms: {name: weighted loss term} of this step, attached to its graph (>= 2 of them); call it
        before the step's backward. scale: the GradScaler's scale under fp16 (a device tensor), else None."""
        if len(terms) < 2:
            raise ValueError(f"per-term gradients need two terms or more, got {list(terms)}")
        key = (tuple(terms), tuple(p.requires_grad for p in self.model.parameters()))
        if key != self._key:
            self._choose(terms)
            self._key = key
        grads = []
        for value in terms.values():
            if not value.requires_grad:  # a term that does not depend on the parameters at all
                grads.append([torch.zeros_like(p) for p in self._params])
                continue
            scaled = value if scale is None else value * scale
            grads.append(
                torch.autograd.grad(
                    scaled, self._params, retain_graph=True, allow_unused=True, materialize_grads=True
                )
            )
        # dot products tensor by tensor (BLAS dot on views: no copy of the gradients into one vector)
        t = len(grads)
        dots = {
            (i, j): torch.stack(
                [torch.vdot(a.reshape(-1), b.reshape(-1)) for a, b in zip(grads[i], grads[j])]
            ).sum()
            for i in range(t)
            for j in range(i, t)
        }
        gram = torch.stack(
            [torch.stack([dots[min(i, j), max(i, j)] for j in range(t)]) for i in range(t)]
        ).float()
        if scale is not None:
            gram = gram / (scale * scale)
        norms = gram.diagonal().sqrt()
        cosines = gram / (norms[:, None] * norms[None, :])
        return TermGrads(list(terms), norms, cosines, self.describe())
