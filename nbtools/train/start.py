"""How `fit` begins: a new run in an empty (or overwritten) run folder, or a run resumed from one of
its checkpoints. "Run all" after a disconnect must never train over a run: that is refused here."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nbtools.atomic import remove_stale_temp_files
from nbtools.config import TrainConfig
from nbtools.env import seed_everything
from nbtools.runs import (
    Run,
    RunExistsError,
    describe_epochs,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from nbtools.runs.files import RUN_FILES, run_files
from nbtools.step import Distributed
from nbtools.train.schedule import resume_plan
from nbtools.train.state import TrainState


def prepare_run_dir(run_dir: Path, resume, overwrite: bool, dist: Distributed) -> None:
    """Refuse to start a new run over checkpoints (unless `overwrite`), delete the old run's files
    when overwriting, create the folder, and remove temp files a killed process left behind."""
    found = list_checkpoints(run_dir, verify=False)
    # A finished run whose epoch_*.pt were deleted (to save Drive quota) is still a run: best.pt,
    # last.pt and metrics.json are its results.
    files = run_files(run_dir)
    if files and resume is None and not overwrite:
        if found:
            held = f"{describe_epochs(found)}, newest {found[-1].path.name}"
            choices = (
                'resume="latest" (or an epoch number) to continue it (in the notebooks: run 04_resume), '
            )
        else:
            names = [p.name for p in files]
            held = f"no epoch checkpoints, but {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
            choices = ""
        raise RunExistsError(
            f"{run_dir} already holds a run ({held}); fit will not train over it. Choose one: {choices}"
            f"a new run_dir to start another, or overwrite=True to delete it and start again."
        )
    if dist.is_main:
        if overwrite and resume is None:
            for pattern in RUN_FILES:
                for p in run_dir.glob(pattern):
                    p.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
    dist.barrier()


def start(
    model: nn.Module,
    cfg: TrainConfig,
    run_dir: Path,
    resume,
    device: torch.device,
    steps_per_epoch: int,
    progress,
    dist: Distributed,
) -> tuple[TrainState, dict | None]:
    """A fresh TrainState, or one restored from a checkpoint, and that checkpoint (its RNG states are
    restored last, by the caller, just before the first batch)."""
    if resume is None:
        seed_everything(cfg.seed + dist.rank)
        return TrainState.create(cfg, model, device, steps_per_epoch, Run(run_dir, cfg), dist), None
    info = find_checkpoint(run_dir, resume)
    checkpoint = load_checkpoint(info.path, verify=not info.verified)
    check_origin(run_dir, info.path, checkpoint, progress)
    run = Run.from_dict(run_dir, checkpoint["run"], config=cfg)
    run.stop = None
    st = TrainState.create(cfg, model, device, steps_per_epoch, run, dist)
    old = st.load_checkpoint(checkpoint)
    changes = old.diff(cfg)
    lr_plan = resume_plan(st.scheduler, checkpoint["scheduler"], old, cfg, st.step, steps_per_epoch)
    where = f"epoch {st.epoch - 1}" + (f" + {st.batch} batches" if st.batch else "")
    progress.message(f"resuming {run_dir} from {info.path.name} ({where}, step {st.step})")
    if changes:
        run.config_changes.append({"epoch": st.epoch - 1, "step": st.step, "changes": changes, **lr_plan})
        for k, (a, b) in changes.items():
            progress.message(f"  config change: {k}: {a!r} -> {b!r}")
        for line in lr_plan.get("lr_plan", []):
            progress.message(f"  {line}")
    return st, checkpoint


def check_origin(run_dir: Path, path: Path, checkpoint: dict, progress) -> None:
    """A checkpoint carries the run folder it was written in: resuming another folder's checkpoint
    into a folder with a run of its own is refused (two histories would mix); into a new folder, or
    from a folder that was moved or copied, it is said."""
    origin = checkpoint.get("run_dir")  # None in checkpoints written before nbtools recorded it
    outside = path.parent.resolve() != run_dir.resolve()
    if not outside and (origin is None or Path(origin) == run_dir):
        return
    written_in = f"the run in {origin}" if origin is not None else f"the run in {path.parent}"
    epochs = len(checkpoint["run"].get("history", []))
    if outside and list_checkpoints(run_dir, verify=False):
        raise RunExistsError(
            f"{run_dir} holds a run of its own, and {path} is a checkpoint of {written_in}: resuming it here "
            f'would mix two runs. Resume this folder\'s run (resume="latest" or an epoch number), or resume '
            f"{path.name} into a new run_dir"
        )
    if outside:
        progress.message(
            f"{path} is a checkpoint of {written_in}: that run, with its history of {epochs} epochs, "
            f"continues in {run_dir}"
        )
    else:
        progress.message(f"{path.name} was written in {origin}: the run folder has been moved or copied here")
