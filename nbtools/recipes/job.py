"""Job: what a recipe builds (model, data, loss, config) and how the run records it; `fit` trains it.

A job on the user's files also holds the folders it reads (`folders`): `check_files` reads every file
once before anything touches the run folder, and records the check's key with the run's data, so a
resume on the same files does not read them again (see nbtools.data.file_check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.data import FileCheck, check_files
from nbtools.recipes.user_data import say
from nbtools.runs import Run
from nbtools.train import fit


@dataclass
class Job:
    model: nn.Module
    train_data: Dataset
    val_data: Dataset
    loss_fn: nn.Module
    config: TrainConfig
    batch_transform: Callable | None = None  # runs on the device on each training batch
    meta: dict[str, Any] = field(default_factory=dict)  # how to rebuild it: {"recipe", "args"[, "data"]}
    data_record: dict[str, Any] | None = None  # the user's data (meta["data"]), None for the demo set
    allow_changed_data: bool = False  # load_job(allow_changed_data=True): the change is recorded
    folders: tuple[Dataset, ...] = ()  # the user's folders as listed, for check_files; () for the demo set
    file_check: FileCheck | None = None  # what check_files read (None: not yet)

    def check_files(self, known_key: str | None = None) -> FileCheck | None:
        """Read every file of `folders` once (nbt.data.check_files); raise BadFilesError naming every bad
        one, else record the check in meta["data"]["file_check"] and say what was read. known_key: the
        key the run recorded (a resume): the same files at the same sizes and mtimes are not read."""
        if not self.folders:
            return None
        check = check_files(self.folders, known_key=known_key)
        say(str(check))
        self.file_check = check
        if self.data_record is not None:
            self.data_record = {
                **self.data_record,
                "file_check": {"key": check.key, "n_files": check.n_files},
            }
            self.meta = {**self.meta, "data": self.data_record}
        return check

    def fit(self, run_dir: str | Path, resume: str | int | Path | None = None, **fit_kwargs: Any) -> Run:
        """`nbt.fit` on this job's parts; fit_kwargs: overwrite, device, verbose, dashboard. The user's
        files are read first if make_job / load_job did not (a recipe function called directly)."""
        if self.folders and self.file_check is None:
            self.check_files()
        return fit(
            self.model,
            self.train_data,
            self.val_data,
            self.loss_fn,
            self.config,
            run_dir,
            resume,
            batch_transform=self.batch_transform,
            meta=self.meta,
            **{"allow_changed_data": self.allow_changed_data, **fit_kwargs},
        )
