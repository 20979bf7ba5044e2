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
from nbtools.runs.files import RUN_FILES
from nbtools.step import Distributed
from nbtools.train.schedule import resume_plan
from nbtools.train.state import TrainState


def prepare_run_dir(run_dir: Path, resume, overwrite: bool, dist: Distributed) -> None:
    """Refuse to start a new run over checkpoints (unless `overwrite`), delete the old run's files
    when overwriting, create the folder, and remove temp files a killed process left behind."""
    found = list_checkpoints(run_dir)
    if found and resume is None and not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run ({describe_epochs(found)}, newest {found[-1].path.name}); "
            f'fit will not train over it. Choose one: resume="latest" (or an epoch number) to continue it, '
            f"with the same model, data and loss as the run started with (a recipe run, from 02/03 or the CLI: "
            f"04_resume or --resume latest rebuild them; a run of plain nbt.fit: call fit(..., "
            f'resume="latest") with your own objects again); a new run_dir to start another; or '
            f"overwrite=True to delete it and start again."
        )
    if dist.is_main:
        if overwrite and resume is None:
            for pattern in RUN_FILES:
                for p in run_dir.glob(pattern):
                    p.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
    dist.barrier()


def check_layout(path: Path, checkpoint: dict, old: TrainConfig, cfg: TrainConfig, train_len: int) -> bool:
    """Refuse a resume that would skip or repeat samples: other training data (its length), or a new
    batch_size / grad_accum inside an epoch (the batches done so far were cut with the old ones).
    Returns True when the steps per epoch change (allowed at an epoch boundary)."""
    saved = (checkpoint.get("data") or {}).get("train_len")  # None: written before it was recorded
    if saved is not None and saved != train_len:
        raise ValueError(
            f"cannot resume from {path}: the run was trained on {saved} training samples, the training data "
            f"passed now has {train_len}; pass the same training data (or start a new run_dir for the new data)"
        )
    new_layout = (old.batch_size, old.grad_accum) != (cfg.batch_size, cfg.grad_accum)
    if new_layout and checkpoint["batch"] > 0:
        epoch = checkpoint["epoch"]
        raise ValueError(
            f"cannot resume from the mid-epoch checkpoint {path.name} with batch_size={cfg.batch_size}, "
            f"grad_accum={cfg.grad_accum}: its {checkpoint['batch']} batches of epoch {epoch + 1} were cut with "
            f"batch_size={old.batch_size}, grad_accum={old.grad_accum}, so the rest of the epoch would skip or "
            f"repeat samples. Finish the epoch with the old values, or resume={epoch} (the epoch checkpoint "
            f"before it, if kept) with the new ones"
        )
    return new_layout


def _previous_stop(run_dir: Path, info) -> str | None:
    """What to say when the last session stopped on non-finite steps (from metrics.json)."""
    try:
        stop = Run.load(run_dir).stop
    except (FileNotFoundError, ValueError, KeyError):
        return None  # no readable record of the last session: nothing to add
    if stop is None or stop.code != "nonfinite":
        return None
    return f"  the last session stopped on non-finite steps; {info.path.name} is the newest clean checkpoint"


def start(
    model: nn.Module,
    cfg: TrainConfig,
    run_dir: Path,
    resume,
    device: torch.device,
    steps_per_epoch: int,
    progress,
    dist: Distributed,
    train_len: int | None = None,
) -> tuple[TrainState, dict | None]:
    """A fresh TrainState, or one restored from a checkpoint, and that checkpoint (its RNG states are
    restored last, by the caller, just before the first batch). train_len: len(train_data)."""
    if resume is None:
        seed_everything(cfg.seed + dist.rank)
        st = TrainState.create(cfg, model, device, steps_per_epoch, Run(run_dir, cfg), dist)
        st.train_len = train_len
        return st, None
    info = find_checkpoint(run_dir, resume)
    checkpoint = load_checkpoint(info.path)
    run = Run.from_dict(run_dir, checkpoint["run"], config=cfg)
    run.stop = None
    st = TrainState.create(cfg, model, device, steps_per_epoch, run, dist)
    st.train_len = train_len
    old = TrainConfig.from_dict(checkpoint["config"])
    new_layout = check_layout(info.path, checkpoint, old, cfg, train_len)
    previous = _previous_stop(run_dir, info)
    st.load_checkpoint(checkpoint)
    changes = old.diff(cfg)
    # a new batch_size / grad_accum: the remaining epochs have steps_per_epoch steps each
    total = st.step + (cfg.epochs - st.epoch + 1) * steps_per_epoch if new_layout else None
    lr_plan = resume_plan(st.scheduler, checkpoint["scheduler"], old, cfg, st.step, steps_per_epoch, total)
    where = f"epoch {st.epoch - 1}" + (f" + {st.batch} batches" if st.batch else "")
    progress.message(f"resuming {run_dir} from {info.path.name} ({where}, step {st.step})")
    if previous:
        progress.message(previous)
    if changes:
        run.config_changes.append({"epoch": st.epoch - 1, "step": st.step, "changes": changes, **lr_plan})
        for k, (a, b) in changes.items():
            progress.message(f"  config change: {k}: {a!r} -> {b!r}")
        for line in lr_plan.get("lr_plan", []):
            progress.message(f"  {line}")
    return st, checkpoint
