"""`nbt.overfit_batch`: can the model memorise one batch?

An overfit test with AMP on (the scaler may skip every step), an EMA copy in the drift probe or an
auxiliary head in the loss tests those, not the model. Here, on a deep copy of the model:
- float32, no autocast, no GradScaler, no EMA, no clipping, no weight decay: plain Adam at `lr`;
- only the main output reaches the loss (`main_only=True`, the first of a deep-supervision list),
  so auxiliary terms are off; pass main_only=False if your loss needs the list. A MultiTaskLoss gets
  every head's output (and the targets as a dict or tuple), and each head is judged on its own;
- model.train() with Dropout layers switched to eval: BatchNorm uses batch statistics as in
  training, and dropout noise is not what this tests (a working model memorises either way, but
  the pass threshold is cleaner without it).

Pass threshold: after `steps` steps, last_loss <= OVERFIT_RATIO = 0.1 x first_loss, or
last_loss <= OVERFIT_ABS = 1e-3 (for losses that start small), and finite. The model passed in, its
BatchNorm statistics, .grad and the torch RNG come out bit-identical.

With a MultiTaskLoss each head of weight > 0 must pass the same threshold on its own (unweighted) loss:
a total can fall while one head does not fit, and a failure should name the head. `heads` gives each
head's first and last loss; the reason names the heads that failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from nbtools.diagnose.sandbox import isolated, model_device, preserved_rng
from nbtools.losses import MultiTaskLoss, main_output
from nbtools.step import Precision, as_float32, train_step

OVERFIT_RATIO, OVERFIT_ABS = 0.1, 1e-3


@dataclass(frozen=True)
class OverfitReport:
    passed: bool
    first_loss: float  # loss before the first step
    last_loss: float  # loss after the last step (same batch, same mode)
    param_drift: float  # L2 distance the copy's parameters moved from the model's
    steps: int  # optimizer steps taken
    reason: str  # the verdict in words
    losses: list[float] = field(default_factory=list, repr=False)  # loss before each step
    # MultiTaskLoss: {head: {"first", "last", "weight", "passed", "losses"}} (unweighted losses)
    heads: dict[str, dict] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return f"overfit test {verdict}: {self.reason}"

    @property
    def failed_heads(self) -> list[str]:
        """The heads of a MultiTaskLoss (weight > 0) that did not memorise the batch."""
        return [n for n, h in self.heads.items() if not h["passed"]]


def _fitted(first: float, last: float) -> bool:
    ok = math.isfinite(first) and math.isfinite(last)
    return ok and (last <= OVERFIT_RATIO * first or last <= OVERFIT_ABS)


def _head_verdict(passed: bool, reason: str, heads: dict[str, dict]) -> tuple[bool, str]:
    """The verdict on the total, with the heads of a MultiTaskLoss judged one by one."""
    failed = [n for n, h in heads.items() if not h["passed"]]
    if not failed:
        return passed, reason
    fit = [n for n, h in heads.items() if h["passed"]]

    def say(names):
        return ", ".join(f"{n!r} {heads[n]['first']:.4g} -> {heads[n]['last']:.4g}" for n in names)

    zero = ", ".join(f"{n!r}: (loss, 0.0)" for n in heads if n != failed[0])
    return False, (
        f"head(s) {say(failed)} did not fit (<= {OVERFIT_RATIO:g} x its start or <= {OVERFIT_ABS:g})"
        + (f", while {say(fit)} did" if fit else "")
        + f"; the total: {reason}. Check the targets of {failed[0]!r} against the inputs (class indices for "
        "cross-entropy, float values for regression), its output layer and loss; test it alone with the "
        f"others' weight 0.0 (MultiTaskLoss({{{failed[0]!r}: (loss, 1.0), {zero}}})). A small weight slows "
        "only the shared trunk: its own layers still train."
    )


def _verdict(first: float, last: float, drift: float, steps: int, trainable: int) -> tuple[bool, str]:
    ratio = f"{first:.4g} -> {last:.4g} in {steps} steps"
    if trainable == 0:
        return False, "the model has no trainable parameters (all requires_grad=False)"
    if not math.isfinite(last) or not math.isfinite(first):
        return False, f"the loss went non-finite ({ratio}); run nbt.find_nonfinite(model, batch, loss_fn)"
    if _fitted(first, last):
        return True, f"loss {ratio} (<= {OVERFIT_RATIO:g} x the start or <= {OVERFIT_ABS:g})"
    if drift == 0.0:
        return False, (
            f"loss {ratio}: the parameters did not move at all (frozen, or the loss has no gradient w.r.t. them)"
        )
    return False, (
        f"loss {ratio}, not below {OVERFIT_RATIO:g} x the start: the model cannot memorise one batch. Check the "
        "labels against the inputs, the output layer and loss (logits expected), any gate in forward; try a "
        "larger lr"
    )


def overfit_batch(
    model: nn.Module,
    batch,
    loss_fn: Callable,
    steps: int = 100,
    lr: float = 1e-3,
    main_only: bool = True,
) -> OverfitReport:
    """Train a copy of `model` on `batch` = (x, y) alone for `steps` Adam steps and report whether it
    memorised it (see the module docstring for the setup and the threshold).

    >>> rep = nbt.overfit_batch(model, next(iter(loader)), loss_fn)   # doctest: +SKIP
    >>> rep.passed, rep.first_loss, rep.last_loss
    (True, 0.71, 0.004)
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    device = model_device(model)
    x, y = (_to(t, device) for t in batch)
    x = x.float() if x.is_floating_point() else x
    multi = isinstance(loss_fn, MultiTaskLoss)
    terms: list[dict[str, torch.Tensor]] = []  # each head's unweighted loss at each call
    work, _ = isolated(model)
    work.float().train()
    for m in work.modules():
        if isinstance(m, _DropoutNd):
            m.eval()
    params = [p for p in work.parameters() if p.requires_grad]

    def main_loss(outputs, targets) -> torch.Tensor:
        if not multi:
            return loss_fn(main_output(outputs) if main_only else outputs, targets)
        if not terms:
            loss_fn.check(outputs, targets)  # structure and finite targets, named, before any step
        total, parts = loss_fn.with_terms(outputs, targets)
        terms.append({n: parts[f"{n}.raw"].detach() for n in loss_fn.names})
        return total

    losses: list[float] = []
    with preserved_rng(device):
        if params:
            # fit's step in fp32, without clipping: the loss it returns is the one before the update
            opt, fp32 = torch.optim.Adam(params, lr=lr), Precision("fp32", device)
            for _ in range(steps):
                losses.append(train_step(work, [(x, y)], main_loss, opt, fp32, clip_norm=None).loss.item())
                if not math.isfinite(losses[-1]):
                    break
        with torch.no_grad():
            last = main_loss(as_float32(work(x)), y).item()
    first = losses[0] if losses else last
    with torch.no_grad():
        sq = [torch.sum((a.float() - b.float()) ** 2) for a, b in zip(work.parameters(), model.parameters())]
        drift = float(torch.sqrt(torch.stack(sq).sum())) if sq else 0.0
    passed, reason = _verdict(first, last, drift, len(losses), len(params))
    heads = _heads(loss_fn, terms) if multi else {}
    if heads and len(params):
        passed, reason = _head_verdict(passed, reason, heads)
    return OverfitReport(passed, first, last, drift, len(losses), reason, losses, heads)


def _heads(loss_fn: MultiTaskLoss, terms: list[dict[str, torch.Tensor]]) -> dict[str, dict]:
    """{head: first, last (after the last step), weight, passed, losses} for heads of weight > 0."""
    out = {}
    for n in loss_fn.names:
        if loss_fn.weights[n] == 0:
            continue  # watched, not trained: nothing to fit
        values = [float(t[n]) for t in terms]
        out[n] = {"first": values[0], "last": values[-1], "weight": loss_fn.weights[n],
                  "passed": _fitted(values[0], values[-1]), "losses": values[:-1]}  # fmt: skip
    return out


def _to(t, device: torch.device):
    """A tensor, or a dict/tuple/list of them (a MultiTaskLoss's targets), on `device`."""
    if isinstance(t, dict):
        return {k: _to(v, device) for k, v in t.items()}
    if isinstance(t, (list, tuple)):
        return type(t)(_to(v, device) for v in t)
    return t.to(device)
