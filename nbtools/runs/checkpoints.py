"""Training checkpoints in a run folder: safe loading, listing, resolving `resume=`, pruning.

A checkpoint is one `torch.save` of plain types and tensors (so `torch.load(weights_only=True)`
reads it); the names are in nbtools.runs.files. Every write is atomic (nbtools.atomic): a crash, a
SIGKILL or a Colab disconnect leaves either the old file or the new one, never half of one, also on
a Google Drive mount.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nbtools.env import run_folder_hint
from nbtools.runs.files import CHECKPOINT_GLOB, CHECKPOINT_NAME

log = logging.getLogger(__name__)

FORMAT = "nbtools-checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a full training checkpoint, or raise an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
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
    return state


@dataclass
class CheckpointInfo:
    epoch: int  # completed epochs
    step: int  # optimizer steps taken
    batch: int  # batches done inside the next epoch (0 at an epoch boundary)
    path: Path
    valid: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""

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


def list_checkpoints(run_dir: str | Path) -> CheckpointList:
    """Every training checkpoint in `run_dir`, oldest first, each opened to check it loads.

    >>> nbt.list_checkpoints("runs/demo")   # doctest: +SKIP
    epoch  step  batch  val_loss  val_auc  valid  file
    1      16           0.6812    0.7013   yes    epoch_001.pt
    """
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.glob(CHECKPOINT_GLOB) if run_dir.is_dir() else []:
        m = CHECKPOINT_NAME.match(p.name)
        if not m:
            continue
        try:
            # mmap reads the structure and maps tensors lazily: a cheap, real "does it load" check.
            s = load_checkpoint(p, mmap=True)
            info = CheckpointInfo(
                epoch=int(s["epoch"]),
                step=int(s["step"]),
                batch=int(s["batch"]),
                path=p,
                valid=True,
                metrics=dict(s.get("summary", {})),
            )
        except FileNotFoundError:
            continue  # pruned between the glob and the load (a run writing while we list)
        except (CheckpointError, KeyError, TypeError, ValueError) as e:
            # What the name tells: epoch_027_step_... is inside epoch 27, after 26 completed.
            mid = m.group(2) is not None
            epoch = int(m.group(1)) - mid
            info = CheckpointInfo(epoch, int(m.group(2) or -1), int(mid), p, False, error=str(e))
        found.append(info)
    found.sort(key=lambda c: (c.epoch, c.mid_epoch, c.step))
    return CheckpointList(found)


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
    """Resolve `resume=` to one valid checkpoint: "latest", an epoch number, or a file path.

    "latest" skips corrupt files with a warning and takes the newest valid one; an explicit epoch
    or path that is corrupt raises, naming the file.
    """
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if which == "latest":
        for c in reversed(checkpoints):
            if c.valid:
                return c
            log.warning("skipping %s: %s", c.path, c.error)
        raise FileNotFoundError(
            f"no valid checkpoint in {run_dir.absolute()} to resume from ({len(checkpoints)} files found); "
            f"start a new run with resume=None, or point run_dir at the run to resume; {run_folder_hint()}"
        )
    if isinstance(which, bool) or not isinstance(which, (int, str, Path)):
        raise ValueError(
            f"resume must be None, 'latest', an epoch number or a checkpoint path, got {which!r}"
        )
    if isinstance(which, int):
        match = [c for c in checkpoints if c.epoch == which and not c.mid_epoch]
        if not match:
            raise FileNotFoundError(
                f"no checkpoint for epoch {which} in {run_dir}; {describe_epochs(checkpoints)}"
            )
        c = match[0]
    else:
        path = Path(which)
        match = [c for c in checkpoints if c.path.resolve() == path.resolve()]
        if not match:
            s = load_checkpoint(path, mmap=True)  # a file outside run_dir: raises if unusable
            return CheckpointInfo(int(s["epoch"]), int(s["step"]), int(s["batch"]), path, True)
        c = match[0]
    if not c.valid:
        raise CheckpointError(c.error)
    return c


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` epoch checkpoints, and mid-epoch ones an epoch
    checkpoint has superseded. Call only after the newest file is safely on disk."""
    checkpoints = list_checkpoints(run_dir)
    # Count only files that load; an invalid one stays for the user to inspect.
    epoch_ends = [c for c in checkpoints if c.valid and not c.mid_epoch]
    newest_end = epoch_ends[-1].step if epoch_ends else -1
    doomed = [c.path for c in epoch_ends[:-keep_last]]
    doomed += [c.path for c in checkpoints if c.valid and c.mid_epoch and c.step <= newest_end]
    for p in doomed:
        p.unlink(missing_ok=True)
        log.debug("pruned %s", p)
    return doomed
