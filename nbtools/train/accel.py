"""GPU settings that take effect: the channels-last memory format and torch.compile.

`TrainConfig.channels_last` puts the model's convolution weights and every input batch in
channels_last_3d (5-D: Conv3d) or channels_last (4-D: Conv2d), the layout tensor-core convolutions
want under AMP; the model keeps its own parameters and state_dict keys, only their strides change.

`TrainConfig.compile` runs forward and backward through `torch.compile(model)`. The compiled module is
a wrapper used for the training step only: checkpoints, the EMA, validation and the diagnostics all use
the model itself, so saved keys carry no `_orig_mod.` prefix and resume is unaffected. Where
torch.compile cannot work (no C++ compiler for the CPU backend, an unsupported Python), a tiny
function is compiled first to find out, and training runs the model uncompiled, saying why.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

_FORMATS = {5: torch.channels_last_3d, 4: torch.channels_last}


def set_memory_format(model: nn.Module, channels_last: bool) -> None:
    """channels_last: the model's 5-D weights to channels_last_3d (or, in a model without them, its 4-D
    weights to channels_last); False: back to contiguous. In place, by `Module.to` (the parameters stay
    the same objects, so an optimizer keeps them)."""
    dims = {p.dim() for p in model.parameters()}
    if not channels_last:
        model.to(memory_format=torch.contiguous_format)
    elif 5 in dims or 4 in dims:
        if {4, 5} <= dims:
            raise ValueError(
                "TrainConfig.channels_last=True needs a model of one kind of convolution, got both 4-D and "
                "5-D weights; set channels_last=False"
            )
        model.to(memory_format=_FORMATS[max(dims & {4, 5})])


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An input batch in the memory format of `set_memory_format` (unchanged if it is not 4-D or 5-D)."""
    fmt = _FORMATS.get(x.dim()) if channels_last else None
    return x.contiguous(memory_format=fmt) if fmt is not None else x


@functools.cache
def compile_unavailable(device_type: str) -> str | None:
    """Why torch.compile cannot run on this device type here, or None if a tiny function compiles."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(2, device=device_type))
    except Exception as e:  # the backend raises its own errors (a missing compiler, Triton, Python)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """`torch.compile(model)` when `enabled` and torch.compile works here, else `model` itself (and a
    warning saying why). The wrapper shares every parameter and buffer with `model`."""
    if not enabled:
        return model
    device = next(model.parameters()).device.type
    reason = compile_unavailable(device)
    if reason is not None:
        log.warning(
            "TrainConfig.compile=True, but torch.compile cannot compile on this %s here (%s); training "
            "runs the model uncompiled, which gives the same results, only slower. On a CPU it needs a C++ "
            "compiler (apt-get install g++); on a GPU, Triton (it ships with torch on Linux). Set "
            "compile=False to run eager without this message.",
            device,
            reason,
        )
        return model
    return torch.compile(model)
