"""Run files written by earlier versions of nbtools, read in today's shape: the one place that knows them.

A training checkpoint (epoch_*.pt) and metrics.json carry a "version" (VERSION). Version 1 is every
file written up to nbtools main f10d404: checkpoints said "version": 1 throughout, metrics.json said
nothing, and fields were added over its life without a bump, so a version-1 file may lack any of them:

- checkpoint "data" (train_len), "run_dir", "rng_ranks", "guards": None, None, [], zero counts;
- early-stopping states without "best_loss" (from before ties of the monitored metric were broken by
  the val loss): the loss its run's history records at its best epoch;
- a precision state with only "mode" and "scaler" (before the fallback record): no request, no
  device, no fallback (the new config and device decide);
- a run record (metrics.json, or a checkpoint's "run") without sessions, config_changes, meta, task
  or findings' status, or with its stop as a sentence ("stopped") before stop codes.

`upgrade_checkpoint` (nbtools.runs.checkpoints.load_checkpoint calls it) and `upgrade_record`
(Run.from_dict) return today's shape, so everything after them indexes the fields without defaults;
they keep the "version" the file was written with (a file saved again as loaded is upgraded again).
A file of a newer version than this nbtools reads is refused, naming both. One thing stays with its
reader: the LR plan of a checkpoint from before plans were recorded is rebuilt by
nbtools.train.schedule.resume_plan, as it needs the steps per epoch of the resumed run.
"""

from __future__ import annotations

import math
from typing import Any

from nbtools.runs.stop import Stop

VERSION = 2  # of checkpoints and metrics.json; 2: the first written with it in both

# metrics.json and checkpoints written before stop codes existed kept only the sentence; these are
# the openings those versions wrote.
_LEGACY_OPENINGS = (("early stopping", "early-stop"), ("non-finite fp16", "amp"), ("non-finite", "nonfinite"))


def _version(d: dict, what: str) -> int:
    version = d.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{what} has version {version!r}, newer than this nbtools reads (version {VERSION}); "
            f"upgrade nbtools (pip install -U nbtools) to read it"
        )
    return version


def stop_from_text(text: str) -> dict | None:
    """The stop (as Stop.to_dict) of an old `stopped` sentence ("" = the run was not stopped)."""
    if not text:
        return None
    code = next((c for opening, c in _LEGACY_OPENINGS if text.startswith(opening)), None)
    if code is None:
        raise ValueError(f"unrecognised stop reason in an old run file: {text!r}")
    return Stop(code, text).to_dict()


def _finding(f: dict) -> dict:
    """A finding saved before findings had a status: open (they were all shown as current)."""
    fields = ("code", "message", "fix", "epoch", "step", "resolved_epoch")
    return {**{k: f.get(k) for k in fields}, "status": f.get("status") or "open"}


def upgrade_record(d: dict[str, Any]) -> dict[str, Any]:
    """A run record (metrics.json, a checkpoint's "run") in today's shape (a new dict; `d` unchanged).
    A checkpoint's record has no version of its own: it is its checkpoint's (upgrade_checkpoint)."""
    if _version(d, "the run record") == VERSION:
        return d
    d = dict(d)
    if "stop" not in d:
        d["stop"] = stop_from_text(d.pop("stopped", ""))
    for key, empty in (
        ("history", []),
        ("steps", []),
        ("config_changes", []),
        ("sessions", []),
        ("meta", {}),
    ):
        d[key] = d.get(key) or empty
    d["findings"] = [_finding(f) for f in d.get("findings", [])]
    d["task"] = d.get("task") or {}
    d.setdefault("best_epoch", None)
    d.setdefault("best_ema_epoch", None)
    return d


def upgrade_early_stopping(state: dict, history: list[dict], loss_key: str) -> dict:
    """An early-stopping state with "best_loss": one written before ties were broken by the val loss
    gets the `loss_key` ("val_loss", "ema_val_loss") its run's history records at its best epoch (inf
    if not finite), or None when the history has none (such a best is then only beaten by an
    improvement, as before)."""
    if "best_loss" in state:
        return state
    loss = next((h.get(loss_key) for h in history if h.get("epoch") == state["best_epoch"]), None)
    return {**state, "best_loss": None if loss is None else loss if math.isfinite(loss) else math.inf}


def upgrade_precision(state: dict) -> dict:
    """A precision state with its request, resolution, device and fallback record: one from before
    them has only "mode": its mode of fp32 cannot tell a CPU run from a fallback, so the new config
    and device decide (nbtools.step.precision.resume_precision)."""
    return {"requested": None, "resolved": None, "device": None, "fallback": None, **state}


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint (torch.load of epoch_*.pt) in today's shape (a new dict; `state` unchanged)."""
    if _version(state, "the checkpoint") == VERSION:
        return state
    state = dict(state)
    state["run"] = upgrade_record({**state["run"], "version": state.get("version", 1)})
    history = state["run"]["history"]
    state["data"] = {"train_len": None, **(state.get("data") or {})}  # None: the length was not recorded
    state.setdefault("run_dir", None)  # None: the folder it was written in was not recorded
    state["rng_ranks"] = state.get("rng_ranks") or []
    state.setdefault("guards", {"bad_streak": 0, "amp_window": []})
    state["early_stopping"] = upgrade_early_stopping(state["early_stopping"], history, "val_loss")
    if state.get("ema_best") is not None:
        state["ema_best"] = upgrade_early_stopping(state["ema_best"], history, "ema_val_loss")
    state["precision"] = upgrade_precision(state["precision"])
    return state
