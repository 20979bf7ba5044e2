"""How a run folder rebuilds its job for a resume: the recipe and arguments it recorded, the config it
last trained with, and, for a run on the user's files, the same files (or a refusal naming the change)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from nbtools.config import TrainConfig
from nbtools.recipes.data_check import check_data, locate
from nbtools.recipes.jobs import Job, build_job, recorded_job
from nbtools.recipes.user_data import say

INIT_ONLY = {"weights"}  # recipe arguments that only initialise the model; a resume does without them


def load_job(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    val: str | Path | None = None,
    allow_changed_data: bool = False,
    **overrides: Any,
) -> Job:
    """Rebuild the job a run folder was trained with (see `make_job`): the same model, data and loss,
    and the config it trained with (not the recipe's current defaults: a schedule derived from
    `epochs`, like focal2d's unfreeze, stays as the run had it), with `overrides` on top for the
    resumed run, e.g. load_job("runs/demo", lr=1e-4, clip_norm=0.5, epochs=20).

    A run on your own files is rebuilt from the files and checked against its fingerprint: changed
    data (files added, removed, relabelled, resized) raises DataChangedError naming them, unless
    `allow_changed_data=True`, which resumes on them and records the change in meta["data"]["changes"].
    Then its files are read as make_job reads them, unless they are the files the run's check read
    at the same sizes and modification times (BadFilesError names every bad one).
    data / val: where the run's folders are now (a Drive mounted at another path); the same files
    there are the same data, and the move is recorded.

    >>> job = nbt.recipes.load_job("runs/mine", data="/content/drive/MyDrive/volumes")  # doctest: +SKIP
    """
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(
            f"load_job overrides are TrainConfig fields; {sorted(unknown)} are not "
            f"(the model and data stay as the run was trained; data= and val= say where its files are now)"
        )
    meta, cfg = recorded_job(run_dir)
    # The checkpoint holds the weights: a pretrained file need not exist any more (Colab's /content
    # does not survive a disconnect) and ImageNet weights need not be downloaded again.
    args = {k: v for k, v in meta["args"].items() if k not in INIT_ONLY}
    recorded = meta.get("data")
    if recorded is None and (data is not None or val is not None):
        raise ValueError(f"{run_dir} was trained on the recipe's embedded demo data; drop data= and val=")
    if recorded is not None:
        args["data"] = locate(run_dir, recorded, "data", data)
        if recorded["source"]["val"] is not None or val is not None:
            args["val"] = locate(run_dir, recorded, "val", val)
    job = build_job(meta["recipe"], args)
    job.config = replace(cfg, **overrides)
    if recorded is not None:
        keep, lines = check_data(run_dir, recorded, job.data_record, allow_changed_data)
        say("\n".join(lines))
        moved = {k: args[k] for k in ("data", "val") if k in args}
        meta = {**meta, "args": {**meta["args"], **moved}, "data": keep}
        job.data_record = keep
    job.meta = meta
    job.allow_changed_data = allow_changed_data
    # after the comparison: changed data is refused without reading it; the same files at the same
    # sizes and mtimes as the run's check are not read again
    job.check_files(known_key=(recorded or {}).get("file_check", {}).get("key"))
    return job
