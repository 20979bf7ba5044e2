"""Mixed precision as one code path: an autocast context and a GradScaler that may be disabled.

A checkpoint records what precision was requested, what it resolved to, on which device (type, name,
compute capability) and whether fp16 fell back to fp32 there. A resume decides again
(`resume_precision`): it takes what the new config asks for on the device it runs on, so a run begun
on a CPU (fp32) continues in bf16 on an A100 and in fp16 on a T4, and a run moved from a GPU to a
CPU continues in fp32. A fallback is kept only where it would recur: the same precision
requested, on a device that would pick the precision that fell back (fp16's overflow comes from the
model's values, so a T4's fallback holds on a V100, not on a bf16 GPU, and not once the config asks
for another precision). Where it holds, the run continues in that device's fallback precision
(`fallback_for`: bf16 where the GPU really has it, else fp32; fp32 on CPU).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from nbtools.env import device_facts, fallback_for, precision_for

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _where(facts: dict | None) -> str:
    if not facts:
        return "an unrecorded device"
    if facts["type"] != "cuda":
        return facts["type"]
    major, minor = facts["capability"]
    return f"{facts.get('name', 'cuda')} (sm {major}.{minor})"


def resume_precision(saved: dict, requested: str, facts: dict) -> tuple[str, dict | None, str | None]:
    """Which precision a resumed run takes: (mode, the fallback record to keep or None, a note for
    the log or None). A pure function of the checkpoint's precision state, the new config's
    `precision` and this device's `device_facts`.

    A fallback {"from": "fp16", "reason", "device"} applies when the request is unchanged and this
    device resolves it to the precision that fell back; with the request unchanged it is carried
    forward where it does not apply (T4 -> CPU -> T4 is fp32 again), and a new request drops it. A
    state from before this record (nbtools.runs.upgrade) has no request: the new config and device decide.
    """
    fresh = precision_for(requested, facts)
    fallback = saved["fallback"]
    same_request = saved["requested"] == requested
    if fallback and same_request and fallback["from"] == fresh:
        target = fallback_for(facts)
        before = fallback_for(fallback["device"]) if fallback.get("device") else "fp32"
        note = None
        if saved["mode"] != target or saved["device"] != facts:
            note = (
                f"continuing in {target}: {fresh} fell back to {before} on {_where(fallback.get('device'))} "
                f"({fallback['reason']}) and {_where(facts)} would run {fresh} again; "
                f"set precision='bf16' on an Ampere or newer GPU, or 'fp32', to choose"
            )
        return target, fallback, note
    saved_mode = saved["mode"]
    note = None
    if saved_mode is not None and saved_mode != fresh:
        note = (
            f"checkpoint trained in {saved_mode} on {_where(saved['device'])}; continuing in {fresh} "
            f"on {_where(facts)} (precision={requested!r})"
        )
    # kept for a later resume on a device that would fall back again, unless the config chose anew
    return fresh, fallback if same_request else None, note


class Precision:
    """The precision a run uses right now: "fp32", "bf16" or "fp16" (+ GradScaler).

    bf16 never uses a scaler (its exponent range is fp32's). fp16 always does, and may fall back
    during a run (`fall_back`) to `fallback_mode`: bf16 where the device really has it (CUDA
    sm >= 8.0), else fp32 (on CPU always fp32, as "auto" picks there). The fallback is recorded in
    checkpoints (see `resume_precision`).
    """

    def __init__(self, requested: str, device: torch.device):
        self.device = torch.device(device)
        self.requested = requested
        self.facts = device_facts(self.device)
        self.resolved = precision_for(requested, self.facts)  # before any fallback
        self.mode = self.resolved
        self.fallback: dict | None = None  # {"from", "reason", "device"} once fp16 fell back
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mode == "fp16")

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.mode]

    def autocast(self) -> contextlib.AbstractContextManager:
        # fp32 needs no context unless an outer autocast is to be switched off; a disabled
        # torch.autocast still costs host time at every step
        if self.mode == "fp32" and not torch.is_autocast_enabled(self.device.type):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.mode != "fp32")

    @property
    def fallback_mode(self) -> str:
        """What `fall_back` switches fp16 to on this device: "bf16" or "fp32"."""
        return fallback_for(self.facts)

    def fall_back(self, reason: str) -> str:
        """Switch fp16 to `fallback_mode` (logged with `reason`, recorded); returns the new mode."""
        log.warning("precision %s -> %s: %s", self.mode, self.fallback_mode, reason)
        self.fallback = {"from": self.mode, "reason": reason, "device": self.facts}
        self._set_mode(self.fallback_mode)
        return self.mode

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=mode == "fp16")

    def state_dict(self) -> dict:
        return {
            "mode": self.mode,
            "scaler": self.scaler.state_dict(),
            "requested": self.requested,
            "resolved": self.resolved,
            "device": self.facts,
            "fallback": self.fallback,
        }

    def load_state_dict(self, state: dict) -> None:
        mode, self.fallback, note = resume_precision(state, self.requested, self.facts)
        if note:
            log.warning(note)
        if mode != self.mode:
            self._set_mode(mode)
        if self.scaler.is_enabled() and state["mode"] == "fp16" and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
