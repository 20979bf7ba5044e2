"""Training checkpoints in a run folder: safe loading, listing, resolving `resume=`, pruning.

A checkpoint is one `torch.save` of plain types and tensors (so `torch.load(weights_only=True)`
reads it); the names are in nbtools.runs.files. Every write is atomic (nbtools.atomic): a crash, a
SIGKILL or a Colab disconnect leaves either the old file or the new one, never half of one, also on
a Google Drive mount.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nbtools.env import run_folder_hint
from nbtools.runs.files import CHECKPOINT_GLOB, CHECKPOINT_NAME, run_path
from nbtools.runs.integrity import zip_problem
from nbtools.runs.upgrade import upgrade_checkpoint
from nbtools.wording import Reworded

log = logging.getLogger(__name__)

FORMAT = "nbtools-checkpoint"
# what a resume cannot do without (other fields are read when present)
REQUIRED = ("epoch", "step", "batch", "config", "model", "optimizer", "scheduler", "run")


class CheckpointError(Reworded, RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False, verify: bool = True
) -> dict:
    """Load a full training checkpoint, or raise an error that names the file.

    verify: first check the zip CRCs of every record (nbtools.runs.integrity), so flipped bytes are
    refused instead of resumed; this reads the whole file once more.
    """
    path = run_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    problem = zip_problem(path) if verify else None
    if problem is not None:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: {problem}; resume from an earlier one "
            f"(nbt.list_checkpoints shows which are valid)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError, ... on bad files
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}); "
            f"resume from an earlier one (nbt.list_checkpoints shows which are valid)"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an nbtools training checkpoint (no format={FORMAT!r} field); "
            f"to load plain model weights use nbt.models.load_pretrained(model, {str(path)!r})"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing or not isinstance(state["model"], dict):
        what = f"no {', '.join(missing)}" if missing else "a model entry that is no state_dict"
        raise CheckpointError(
            f"{path} has the nbtools checkpoint marker but {what}: it cannot resume a run; "
            f"resume from another checkpoint (nbt.list_checkpoints shows which are valid)"
        )
    try:
        return upgrade_checkpoint(state)  # today's shape, from any version this nbtools reads
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} cannot be read as a training checkpoint of this version: {e}") from e


@dataclass
class CheckpointInfo:
    epoch: int  # completed epochs
    step: int  # optimizer steps taken
    batch: int  # batches done inside the next epoch (0 at an epoch boundary)
    path: Path
    valid: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    verified: bool = False  # its zip CRCs were checked and match

    @property
    def mid_epoch(self) -> bool:
        return self.batch > 0


class CheckpointList(list):
    """The checkpoints of a run folder, oldest first; prints as a table (HTML in notebooks)."""

    _cols = ("epoch", "step", "batch", "val_loss", "val_auc", "valid", "file")

    def _rows(self) -> list[tuple]:
        def fmt(v: Any) -> str:
            return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

        return [
            (
                c.epoch,
                c.step,
                c.batch or "",
                fmt(c.metrics.get("val_loss")),
                fmt(c.metrics.get("val_auc")),
                "yes" if c.valid else f"NO: {c.error[:60]}",
                c.path.name,
            )
            for c in self
        ]

    def __str__(self) -> str:
        if not self:
            return "no checkpoints"
        rows = [self._cols, *[tuple(map(str, r)) for r in self._rows()]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._cols))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._cols)
        body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r in self._rows())
        return f"<table><tr>{head}</tr>{body}</table>"

    def valid(self) -> CheckpointList:
        return CheckpointList(c for c in self if c.valid)


def list_checkpoints(run_dir: str | Path, verify: bool = True) -> CheckpointList:
    """Every training checkpoint in `run_dir`, oldest first, each opened to check it loads.

    verify: also check every file's zip CRCs, so one with flipped bytes is listed invalid; this reads
    each file whole (seconds for large checkpoints on Drive); verify=False only opens them.

    >>> nbt.list_checkpoints("runs/demo")   # doctest: +SKIP
    epoch  step  batch  val_loss  val_auc  valid  file
    1      16           0.6812    0.7013   yes    epoch_001.pt
    """
    run_dir = run_path(run_dir)
    found = []
    for p in run_dir.glob(CHECKPOINT_GLOB) if run_dir.is_dir() else []:
        m = CHECKPOINT_NAME.match(p.name)
        if not m:
            continue
        try:
            # mmap reads the structure and maps tensors lazily: a cheap, real "does it load" check.
            s = load_checkpoint(p, mmap=True, verify=verify)
            info = CheckpointInfo(
                epoch=int(s["epoch"]),
                step=int(s["step"]),
                batch=int(s["batch"]),
                path=p,
                valid=True,
                metrics=dict(s.get("summary", {})),
                verified=verify,
            )
        except FileNotFoundError:
            continue  # pruned between the glob and the load (a run writing while we list)
        except (CheckpointError, KeyError, TypeError, ValueError) as e:
            info = _invalid(p, m, str(e))
        found.append(info)
    found.sort(key=lambda c: (c.epoch, c.mid_epoch, c.step))
    return CheckpointList(found)


def _invalid(path: Path, m, error: str) -> CheckpointInfo:
    # What the name tells: epoch_027_step_... is inside epoch 27, after 26 completed.
    mid = m.group(2) is not None
    epoch = int(m.group(1)) - mid
    return CheckpointInfo(epoch, int(m.group(2) or -1), int(mid), path, False, error=error)


def _verified(c: CheckpointInfo) -> CheckpointInfo:
    """`c` checked against its zip CRCs: verified, or invalid with the reason."""
    if c.verified or not c.valid:
        return c
    problem = zip_problem(c.path)
    if problem is None:
        return CheckpointInfo(c.epoch, c.step, c.batch, c.path, True, c.metrics, verified=True)
    return CheckpointInfo(c.epoch, c.step, c.batch, c.path, False, c.metrics, f"corrupt: {problem}")


def describe_epochs(checkpoints: CheckpointList) -> str:
    epochs = sorted({c.epoch for c in checkpoints if not c.mid_epoch})
    if not epochs:
        return "no epoch checkpoints"
    runs, start = [], epochs[0]
    for a, b in zip(epochs, [*epochs[1:], None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return "found epochs " + ", ".join(runs)


def find_checkpoint(run_dir: str | Path, which: str | int | Path) -> CheckpointInfo:
    """Resolve `resume=` to one valid, verified checkpoint: "latest", an epoch number, or a file path.

    "latest" skips corrupt files (unloadable, or bytes changed: see nbtools.runs.integrity) with a
    warning and takes the newest valid one; an explicit epoch or path that is corrupt raises, naming
    the file. Any other word ("last", "best") raises ValueError naming the choices.
    """
    run_dir = run_path(run_dir)
    if isinstance(which, bool) or not isinstance(which, (numbers.Integral, str, Path)):
        raise ValueError(
            f"resume must be None, 'latest', an epoch number or a checkpoint path, got {which!r}"
        )
    checkpoints = list_checkpoints(run_dir, verify=False)  # each is verified when it is picked
    if which == "latest":
        for c in reversed(checkpoints):
            c = _verified(c)
            if c.valid:
                return c
            log.warning("skipping %s: %s; falling back to the checkpoint before it", c.path, c.error)
        raise FileNotFoundError(
            f"no valid checkpoint in {run_dir} to resume from ({len(checkpoints)} files found); "
            f"start a new run (resume=None), or point run_dir at the run to resume; {run_folder_hint()}"
        )
    if isinstance(which, numbers.Integral):
        match = [c for c in checkpoints if c.epoch == which and not c.mid_epoch]
        if not match:
            raise FileNotFoundError(
                f"no checkpoint for epoch {which} in {run_dir}; {describe_epochs(checkpoints)}"
            )
        c = match[0]
    else:
        path = run_path(which)
        if not path.is_file() and isinstance(which, str) and "/" not in which and not which.endswith(".pt"):
            raise ValueError(
                f'resume={which!r} is not a choice: resume takes None, "latest" (the newest valid checkpoint), '
                f"an epoch number ({describe_epochs(checkpoints)} in {run_dir}) or a checkpoint file's path"
                + ("; last.pt holds model weights only and cannot resume a run" if which == "last" else "")
            )
        match = [c for c in checkpoints if c.path.resolve() == path.resolve()]
        if not match:
            s = load_checkpoint(path, mmap=True)  # a file outside run_dir: raises if unusable
            return CheckpointInfo(int(s["epoch"]), int(s["step"]), int(s["batch"]), path, True, verified=True)
        c = match[0]
    c = _verified(c)
    if not c.valid:
        raise CheckpointError(f"{c.path}: {c.error}" if str(c.path) not in c.error else c.error)
    return c


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` epoch checkpoints, and mid-epoch ones an epoch
    checkpoint has superseded. Call only after the newest file is safely on disk."""
    checkpoints = list_checkpoints(run_dir, verify=False)  # the CRC check reads every file whole
    # Count only files that load; an invalid one stays for the user to inspect.
    epoch_ends = [c for c in checkpoints if c.valid and not c.mid_epoch]
    newest_end = epoch_ends[-1].step if epoch_ends else -1
    doomed = [c.path for c in epoch_ends[:-keep_last]]
    doomed += [c.path for c in checkpoints if c.valid and c.mid_epoch and c.step <= newest_end]
    for p in doomed:
        p.unlink(missing_ok=True)
        log.debug("pruned %s", p)
    return doomed
