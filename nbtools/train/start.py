"""How `fit` begins: a new run in an empty (or overwritten) run folder, or a run resumed from one of
its checkpoints. "Run all" after a disconnect must never train over a run: that is refused here."""

from __future__ import annotations

import json
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
from nbtools.runs.files import (
    CONFIG_FILE,
    LEARNING_CURVES_FILE,
    LOSS_CURVE_FILE,
    METRICS_FILE,
    MLFLOW_FILE,
    RUN_FILES,
    TENSORBOARD_GLOB,
    run_files,
)
from nbtools.step import Distributed
from nbtools.train.loader import default_workers
from nbtools.train.schedule import resume_plan
from nbtools.train.state import TrainState
from nbtools.wording import audience


def prepare_run_dir(run_dir: Path, resume, overwrite: bool, dist: Distributed) -> str | None:
    """Refuse to start a new run over a run (unless `overwrite`), delete the old run's files when
    overwriting, create the folder, and remove temp files a killed process left behind.

    A run is what a resume or a user would miss: a checkpoint, weights (a finished run whose epoch_*.pt
    were deleted to save Drive quota keeps best.pt and last.pt) or a history in metrics.json. A folder
    holding only what a run writes before its first checkpoint (config.json, a metrics.json without
    epochs, TensorBoard events, mlflow.json, figures: a run that failed on a bad file in epoch 1) is no run to
    protect: a new run replaces those files, and the line returned says so (None when there were none)."""
    files = run_files(run_dir)
    kept = [p for p in files if _is_result(p)]
    replaced = None
    if kept and resume is None and not overwrite:
        found = list_checkpoints(run_dir, verify=False)
        if found:
            held = f"{describe_epochs(found)}, newest {found[-1].path.name}"
        else:
            names = [p.name for p in kept]
            held = f"no epoch checkpoints, but {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
        # the CLI and 04_resume rebuild a recipe's model, data and loss; in Python a plain fit's are the caller's
        own = ' (a run of plain nbt.fit: call fit(..., resume="latest") with your own objects again)'
        raise RunExistsError(
            f"{run_dir} already holds a run ({held}); fit will not train over it. Choose one: "
            f'resume="latest" (or an epoch number) to continue it, with the model, data and loss it started '
            f"with{own if audience() == 'python' else ''}; a new run_dir to start another; or overwrite=True "
            f"to delete it and start again."
        )
    if files and resume is None and not overwrite:
        names = ", ".join(sorted({_kind(p) for p in files}, key=str.lower))
        replaced = (
            f"{run_dir} holds no checkpoint or results, only {names} of a run that stopped before its first "
            f"checkpoint: starting a new run there, in their place"
        )
    if dist.is_main:
        if overwrite and resume is None:
            for pattern in RUN_FILES:
                for p in run_dir.glob(pattern):
                    p.unlink()
        elif replaced:  # only the run's own files (a user's PNG in the folder stays)
            for p in files:
                p.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
    dist.barrier()
    return replaced


def _is_result(path: Path) -> bool:
    """Whether a run file is something a run kept: any checkpoint or weights, a metrics.json with
    epochs in it (or one that cannot be read, which cannot say it has none)."""
    if path.name in (CONFIG_FILE, MLFLOW_FILE, LOSS_CURVE_FILE, LEARNING_CURVES_FILE) or path.match(
        TENSORBOARD_GLOB
    ):
        return False
    if path.name != METRICS_FILE:
        return True
    try:
        return bool(json.loads(path.read_text()).get("history"))
    except (OSError, ValueError, AttributeError):
        return True


def _kind(path: Path) -> str:
    return "TensorBoard events" if path.match(TENSORBOARD_GLOB) else path.name


def check_layout(
    path: Path, checkpoint: dict, old: TrainConfig, cfg: TrainConfig, train_len: int, allow_changed_data=False
) -> bool:
    """Refuse a resume that would skip or repeat samples: other training data (its length; taken at an
    epoch boundary when the caller allows changed data, as load_job(allow_changed_data=True) does once it
    has recorded the change), or a new batch_size / grad_accum inside an epoch (the batches done so far
    were cut with the old ones). Returns True when the steps per epoch change."""
    saved = checkpoint["data"]["train_len"]  # None: written before it was recorded (nbtools.runs.upgrade)
    if saved is not None and saved != train_len and allow_changed_data and checkpoint["batch"] == 0:
        return True
    if saved is not None and saved != train_len:
        at = f", inside epoch {checkpoint['epoch'] + 1}" if allow_changed_data else ""
        raise ValueError(
            f"cannot resume from {path}: the run was trained on {saved} training samples, the training data "
            f"passed now has {train_len}{at}; pass the same training data (or start a new run_dir for the new "
            f"data{'; changed data is taken at an epoch checkpoint' if at else ''})"
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


def fill_num_workers(cfg: TrainConfig, device: torch.device, old: TrainConfig | None = None) -> TrainConfig:
    """`cfg` with num_workers=None made a count: on a resume (`old`, the checkpoint's config), the count
    the run started with, else `default_workers` for the device. Which worker loads a batch, and so
    the random numbers its augmentation draws, depends on how many there are: another count would
    train on other augmentations than the straight run did."""
    if cfg.num_workers is not None:
        return cfg
    recorded = old.num_workers if old is not None else None
    return cfg.replace(num_workers=recorded if recorded is not None else default_workers(device.type))


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
    allow_changed_data: bool = False,
) -> tuple[TrainState, Run, dict | None]:
    """A fresh TrainState and Run, or both restored from a checkpoint, and that checkpoint (upgraded to
    today's shape; the caller restores the watcher's state from it, and its RNG states last, just
    before the first batch). train_len: len(train_data); allow_changed_data: another length is taken
    at an epoch boundary (see check_layout). The model's BufferGuard is built before (the EMA copies
    the buffers it makes views of)."""
    if resume is None:
        cfg = fill_num_workers(cfg, device)
        seed_everything(cfg.seed + dist.rank)
        run = Run(run_dir, cfg)
        run.start_session()
        return TrainState.create(cfg, model, device, steps_per_epoch, train_len), run, None
    info = find_checkpoint(run_dir, resume)
    checkpoint = load_checkpoint(info.path, verify=not info.verified)
    check_origin(run_dir, info.path, checkpoint, progress)
    old = TrainConfig.from_dict(checkpoint["config"])
    cfg = fill_num_workers(cfg, device, old)
    run = Run.from_dict(run_dir, checkpoint["run"], config=cfg)
    run.stop = None
    st = TrainState.create(cfg, model, device, steps_per_epoch, train_len)
    new_layout = check_layout(info.path, checkpoint, old, cfg, train_len, allow_changed_data)
    previous = _previous_stop(run_dir, info)
    st.load_checkpoint(checkpoint)
    changes = old.diff(cfg)
    # a new batch_size / grad_accum: the remaining epochs have steps_per_epoch steps each
    total = st.step + (cfg.epochs - st.epoch + 1) * steps_per_epoch if new_layout else None
    lr_plan = resume_plan(st.scheduler, checkpoint["scheduler"], old, cfg, st.step, steps_per_epoch, total)
    run.start_session(st.epoch - 1, st.step, info.path.name)
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
    return st, run, checkpoint


def check_origin(run_dir: Path, path: Path, checkpoint: dict, progress) -> None:
    """A checkpoint carries the run folder it was written in: resuming another folder's checkpoint
    into a folder with a run of its own is refused (two histories would mix); into a new folder, or
    from a folder that was moved or copied, it is said."""
    origin = checkpoint["run_dir"]  # None in checkpoints written before nbtools recorded it
    outside = path.parent.resolve() != run_dir.resolve()
    if not outside and (origin is None or Path(origin) == run_dir):
        return
    written_in = f"the run in {origin}" if origin is not None else f"the run in {path.parent}"
    epochs = len(checkpoint["run"]["history"])
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
