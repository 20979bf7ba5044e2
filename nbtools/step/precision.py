"""Mixed precision as one code path: an autocast context and a GradScaler that may be disabled."""

from __future__ import annotations

import contextlib
import logging

import torch

from nbtools.env import resolve_precision

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Precision:
    """The precision a run uses right now: "fp32", "bf16" or "fp16" (+ GradScaler).

    bf16 never uses a scaler (its exponent range is fp32's). fp16 always does, and may fall back to
    fp32 during a run (`fall_back_to_fp32`), which is recorded in checkpoints so a resumed run keeps it.
    """

    def __init__(self, requested: str, device: torch.device):
        self.device = torch.device(device)
        self.mode = resolve_precision(requested, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mode == "fp16")

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.mode]

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.mode != "fp32")

    def fall_back_to_fp32(self, reason: str) -> None:
        log.warning("precision %s -> fp32: %s", self.mode, reason)
        self.mode = "fp32"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] == "fp32" and self.mode != "fp32":
            # The run fell back to fp32 before it was saved; keep it there.
            self.fall_back_to_fp32("the checkpoint was saved after an fp32 fallback")
        elif state["mode"] != self.mode:
            log.warning("checkpoint trained in %s, continuing in %s", state["mode"], self.mode)
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
