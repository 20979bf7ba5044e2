"""A dropdown of a run folder's checkpoints, for the resume notebook: its value is what `resume=` takes."""

from __future__ import annotations

from pathlib import Path

from nbtools.env import run_folder_hint
from nbtools.runs import CheckpointInfo, CheckpointList, list_checkpoints


def _label(c: CheckpointInfo) -> str:
    where = f"epoch {c.epoch}" + (f" + {c.batch} batches" if c.mid_epoch else "")
    shown = [f"{k} {c.metrics[k]:.4f}" for k in ("val_loss", "val_auc") if c.metrics.get(k) is not None]
    return " · ".join([where, f"step {c.step}", *shown])


def checkpoint_options(checkpoints: CheckpointList) -> list[tuple[str, str | int]]:
    """(label, resume value) for each loadable checkpoint, newest first, after a "latest" entry:
    an epoch number for epoch checkpoints, the file path for mid-epoch ones. Corrupt files are left
    out (list_checkpoints shows them and why)."""
    valid = checkpoints.valid()
    if not valid:
        return []
    options: list[tuple[str, str | int]] = [(f"latest ({_label(valid[-1])})", "latest")]
    for c in reversed(valid):
        options.append((_label(c), str(c.path) if c.mid_epoch else c.epoch))
    return options


def checkpoint_picker(run_dir: str | Path, value: str | int = "latest"):
    """An ipywidgets Dropdown of `run_dir`'s loadable checkpoints; pass `.value` as `fit(resume=...)`.

    `value` ("latest" or an epoch number) is preselected, so "Run all" resumes from it untouched.
    Raises FileNotFoundError naming the folder when it holds no loadable checkpoint.

    >>> picker = nbt.viz.checkpoint_picker("runs/demo")          # doctest: +SKIP
    >>> run = job.fit("runs/demo", resume=picker.value)          # doctest: +SKIP
    """
    import ipywidgets as w

    checkpoints = list_checkpoints(run_dir)
    options = checkpoint_options(checkpoints)
    if not options:
        raise FileNotFoundError(
            f"no loadable checkpoint in {Path(run_dir).absolute()} ({len(checkpoints)} files); train first "
            f"(02 or 03), or point RUN_DIR at the run folder you trained into; {run_folder_hint()}"
        )
    values = [v for _, v in options]
    if value not in values:
        raise ValueError(f"no checkpoint {value!r} in {run_dir}; choose one of {values}")
    return w.Dropdown(
        options=options, value=value, description="resume from", layout=w.Layout(width="max-content")
    )
