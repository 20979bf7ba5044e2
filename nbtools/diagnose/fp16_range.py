"""Is a non-finite fp16 step fp16's fault? The same micro-batches re-run in fp16 and in a wider precision.

fp16's largest value is 65504. Inputs in raw units (CT Hounsfield units times a scale, 16-bit
counts) or activations a layer blows up (a missing normalization, a large gain) pass that in the
forward pass, and the loss is inf or NaN on every step, while fp32 (and bf16, whose exponent range
is fp32's) computes the same batch finitely. Lowering
the LR or clipping cannot help; switching precision or bringing the values into range does.

`fp16_range_check` re-runs each micro-batch through `nonfinite_report` (a deep copy of the model in
its current mode, RNG preserved: nothing of the caller changes) under fp16 autocast, and a batch
that is non-finite there once more under the reference precision:
    "range"  non-finite in fp16, finite in the reference: fp16's range; `report` names the first
             module that overflowed (the fp16 report)
    "real"   non-finite in the reference too: a real NaN/inf (bad input, a broken layer, an LR that
             diverged); `report` is the reference's report
    "none"   every batch finite in fp16 on the re-run (the step needed accumulated state, or is not
             deterministic): no evidence either way
Cost: two forward and backward passes of a model copy per micro-batch, only when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nbtools.diagnose.nonfinite import NonFiniteReport, nonfinite_report

FP16_MAX = 65504.0
_REFERENCE_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Fp16Range:
    verdict: str  # "range" | "real" | "none"
    reference: str  # the precision the batch was re-run in: "fp32" or "bf16"
    report: NonFiniteReport | None = None
    input_absmax: float | None = None  # the largest |input| of the batch that showed it

    def __str__(self) -> str:
        if self.verdict == "range":
            beyond = (
                f" (the batch's inputs reach |x| = {self.input_absmax:.3g}, beyond fp16's {FP16_MAX:g} "
                "before any layer)"
                if self.input_absmax is not None and self.input_absmax > FP16_MAX
                else ""
            )
            return f"{self.report}{beyond}"
        if self.verdict == "real":
            return f"non-finite in {self.reference} too: {self.report}"
        return "finite under fp16 on the re-run"


def fp16_range_check(
    model: nn.Module, batches: Sequence, loss_fn: Callable, reference: str = "fp32"
) -> Fp16Range:
    """The verdict on the first micro-batch of `batches` ((x, y) pairs) that is non-finite under
    fp16 autocast; "none" if every one is finite. reference: "fp32" or "bf16"."""
    if reference not in _REFERENCE_DTYPES:
        raise ValueError(f"reference must be 'fp32' or 'bf16', got {reference!r}")
    for batch in batches:
        in_fp16 = nonfinite_report(model, batch, loss_fn, autocast_dtype=torch.float16)
        if not in_fp16:
            continue
        in_ref = nonfinite_report(model, batch, loss_fn, autocast_dtype=_REFERENCE_DTYPES[reference])
        if in_ref:
            return Fp16Range("real", reference, in_ref)
        x = batch[0]
        absmax = float(x.detach().abs().max()) if x.is_floating_point() and x.numel() else None
        return Fp16Range("range", reference, in_fp16, absmax)
    return Fp16Range("none", reference)
