"""Where does a NaN or inf first appear? One forward and backward pass on one batch, with hooks.

Causal order, checked in this order:
1. "input": the batch itself holds non-finite values (x, or a floating y).
2. "forward": the first module to *return* a non-finite output, in the order forward calls return
   (so a leaf comes before the Sequential around it). If that module's own inputs were already
   non-finite, a functional operation between modules produced the value, and the report names
   the module whose forward holds that operation (the parent).
3. "loss": the model's outputs are finite but the loss is not.
4. "backward": gradients flow from the loss towards the input, so the first non-finite gradient in
   backward order is the causal one and every gradient after it is poisoned. The report names the
   module whose backward produced it: the gradient w.r.t. its output was finite, the gradient
   w.r.t. its input is not (if the gradient w.r.t. the model's output is already non-finite, the
   loss's backward produced it: "loss"). Failing that, the first module with a non-finite
   parameter gradient.

Gradients are observed with `Tensor.register_hook` on module inputs and outputs, never with
`register_full_backward_hook`, which breaks on in-place ReLU (resnet3d and torchvision ResNets).
A hook registered before an in-place op receives the gradient w.r.t. the value before it.

It runs on a deep copy of the model in the model's current train/eval mode, under the torch RNG
state it found (restored after): the model, its BatchNorm statistics, its .grad and the RNG are
left exactly as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nbtools.diagnose.sandbox import isolated, model_device, preserved_rng
from nbtools.step import as_float32


@dataclass(frozen=True)
class NonFiniteReport:
    """What `nonfinite_report` found. Falsy when everything was finite.

    module: dotted module name ("" is the model's own forward) for where in ("forward", "backward"),
    else None. where: "input" | "forward" | "loss" | "backward" | None. detail: the evidence.
    """

    module: str | None
    where: str | None
    detail: str
    input_name: str | None = None  # "input" or "target" when where == "input"

    def __bool__(self) -> bool:
        return self.where is not None

    @property
    def name(self) -> str | None:
        """What find_nonfinite returns: the module name, "input"/"target", "loss", or None."""
        if self.where in ("forward", "backward"):
            return self.module or "(model)"
        return self.input_name if self.where == "input" else self.where

    def __str__(self) -> str:
        if not self:
            return f"everything finite: {self.detail}"
        return f"{self.where}: {self.name}: {self.detail}"


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _bad(tensors: list[torch.Tensor]) -> str | None:
    """ "N of M values non-finite (nan a, inf b)" for the floating tensors, or None if all finite."""
    ts = [t.detach() for t in tensors if t.is_floating_point()]
    if not ts or all(bool(torch.isfinite(t).all()) for t in ts):
        return None
    nan = sum(int(t.isnan().sum()) for t in ts)
    inf = sum(int(t.isinf().sum()) for t in ts)
    return f"{nan + inf} of {sum(t.numel() for t in ts)} values non-finite (nan {nan}, inf {inf})"


def _kind(module: nn.Module) -> str:
    return type(module).__name__


def nonfinite_report(
    model: nn.Module, batch, loss_fn: Callable, *, autocast_dtype: torch.dtype | None = None
) -> NonFiniteReport:
    """Locate the first non-finite value of one training step on `batch` = (x, y); see the module
    docstring for the order. autocast_dtype (torch.float16 / bfloat16) runs the forward under
    autocast as `fit` does in mixed precision; the loss is computed in float32 either way."""
    x, y = batch
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    for name, t in (("input", x), ("target", y)):
        bad = _bad([t])
        if bad:
            return NonFiniteReport(None, "input", f"the batch's {name} {tuple(t.shape)} has {bad}", name)
    work, _ = isolated(model)
    names = {m: n for n, m in work.named_modules()}
    forward: list[tuple[str, str, bool]] = []  # (module, what is bad, were its inputs finite)
    events: list[tuple[str, str, int, bool]] = []  # backward order: (module, "in"/"out", tensor id, finite)
    inputs_ok: dict[nn.Module, list[bool]] = {}

    def watch(name: str, kind: str, t: torch.Tensor) -> None:
        if t.requires_grad and t.is_floating_point():
            t.register_hook(lambda g: events.append((name, kind, id(t), bool(torch.isfinite(g).all()))))

    def pre_hook(module, args):
        ts = _tensors(args)
        inputs_ok.setdefault(module, []).append(_bad(ts) is None)
        for t in ts:
            watch(names[module], "in", t)

    def post_hook(module, args, out):
        ts = _tensors(out)
        bad = _bad(ts)
        if bad is not None:
            forward.append((names[module], bad, inputs_ok[module].pop()))
        else:
            inputs_ok[module].pop()
        for t in ts:
            watch(names[module], "out", t)

    handles = [
        h for m in names for h in (m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook))
    ]
    try:
        with preserved_rng(device):
            x_in = x
            if x.is_floating_point():
                # Grad-tracking and not a leaf, so the first module's input gradient is observed and
                # an in-place first layer is allowed.
                x_in = x.detach().requires_grad_().clone()
            amp = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with amp:
                outputs = work(x_in)
            if forward:
                return _forward_report(work, forward)
            loss = loss_fn(as_float32(outputs), y)
            bad = _bad([loss])
            if bad:
                return NonFiniteReport(None, "loss", f"the model outputs are finite but the loss has {bad}")
            if not loss.requires_grad:
                return NonFiniteReport(None, None, "forward and loss (no gradient: nothing requires grad)")
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    return _backward_report(work, names, events)


def _forward_report(work: nn.Module, forward: list[tuple[str, str, bool]]) -> NonFiniteReport:
    name, bad, inputs_finite = forward[0]
    module = work.get_submodule(name)
    if inputs_finite:
        return NonFiniteReport(name, "forward", f"{_kind(module)} returned {bad}; its inputs were finite")
    parent = name.rpartition(".")[0]
    return NonFiniteReport(
        parent,
        "forward",
        f"an operation in the forward of {parent or '(model)'} ({_kind(work.get_submodule(parent))}) outside "
        f"its submodules produced it: {name} ({_kind(module)}) was the first to receive it and returned {bad}",
    )


def _backward_report(work: nn.Module, names: dict, events: list) -> NonFiniteReport:
    out_bad = {n for n, kind, _, ok in events if kind == "out" and not ok}
    if "" in out_bad:
        return NonFiniteReport(
            None, "loss", "the loss's backward gave a non-finite gradient for the model output"
        )
    first = next(
        ((n, tid) for n, kind, tid, ok in events if kind == "in" and not ok and n not in out_bad), None
    )
    if first is not None:
        # Modules nested around the same input tensor all qualify; the innermost did the work.
        same = [
            n
            for n, kind, tid, ok in events
            if kind == "in" and tid == first[1] and n not in out_bad and not ok
        ]
        name = max(same, key=lambda n: n.count(".") + (n != ""))
        return NonFiniteReport(
            name,
            "backward",
            f"{_kind(work.get_submodule(name))}'s backward turned a finite gradient w.r.t. its output into a "
            "non-finite gradient w.r.t. its input (the first non-finite gradient, counting from the loss)",
        )
    for m in reversed(list(names)):  # modules in reverse registration order, roughly backward order
        bad = _bad([p.grad for p in m.parameters(recurse=False) if p.grad is not None])
        if bad:
            return NonFiniteReport(names[m], "backward", f"{_kind(m)}'s parameter gradients have {bad}")
    return NonFiniteReport(None, None, "input, forward, loss and backward are all finite")


def find_nonfinite(model: nn.Module, batch, loss_fn: Callable) -> str | None:
    """The name of the first module whose output or gradient is not finite on `batch`, or None.

    "input" (or "target") when the batch itself is bad, "loss" when the loss is the first thing to go
    non-finite. The evidence is in `nonfinite_report(model, batch, loss_fn)`.

    >>> nbt.find_nonfinite(model, (x, y), loss_fn)   # doctest: +SKIP
    'layer3.1.bn2'
    """
    return nonfinite_report(model, batch, loss_fn).name
