"""RegressionFolder: files listed in a CSV with real-valued targets beside them (`path,target`, several
target columns, or named ones), read as a VolumeFolder or an ImageFolder reads them.

Items are ``(x, y)``: x as the file dataset gives it, y a float32 tensor (K,) of the row's K targets
(K = 1 for `path,target`), the shape a model with K outputs (B, K) is compared with. The targets are
kept whole in `.targets` (N, K), so the training set's mean and std (nbtools.tasks.target_stats) and
the data fingerprint need no file read, and the run's fingerprint covers them: a resume on a CSV whose
targets changed is refused, naming the file and the old and new value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.folders import VolumeFolder
from nbtools.data.images import ImageFolder
from nbtools.data.targets import read_targets

log = logging.getLogger(__name__)


class RegressionFolder(Dataset):
    """``(x, y)`` from `files` (a VolumeFolder or ImageFolder built on `csv` with labels="ignore") and
    the CSV's target columns (`targets`: their names; None takes every column but `path`).

    `.targets` float64 array (N, K), `.target_names` the K column names, `.paths`, `.root` and
    `.config` those of `files`. A bad target (empty, not a number, NaN, infinite) raises ValueError
    naming its row, column and file (nbtools.data.targets).

    >>> ds = RegressionFolder.volumes("ages.csv", shape=(64, 64, 64))      # path,age    # doctest: +SKIP
    >>> x, y = ds[0]; x.shape, y                                                       # doctest: +SKIP
    (torch.Size([1, 64, 64, 64]), tensor([63.5000]))
    """

    def __init__(self, csv: str | Path, files: Dataset, targets: Sequence[str] | None = None) -> None:
        table = read_targets(csv, targets)
        if len(files) != len(table.values):
            raise ValueError(
                f"{csv}: {len(table.values)} rows of targets but the file dataset lists {len(files)} files; "
                f"build it on the same CSV with labels='ignore'"
            )
        self.csv, self.files = Path(csv), files
        self.root, self.paths = files.root, files.paths
        self.target_names, self.rows = table.names, table.rows
        self.targets = table.values  # float64, exact as written: the fingerprint records these
        self._float32 = torch.from_numpy(table.values.astype(np.float32))
        log.info("%r", self)

    @classmethod
    def volumes(cls, csv: str | Path, shape, targets: Sequence[str] | None = None, **options: Any):
        """Volumes (.npy/.npz/.nii/.nii.gz) read by VolumeFolder(csv, shape, labels="ignore", **options)."""
        return cls(csv, VolumeFolder(csv, shape=shape, labels="ignore", **options), targets)

    @classmethod
    def images(cls, csv: str | Path, size: int, targets: Sequence[str] | None = None, raw: bool = False):
        """Images (PNG/JPEG) read by ImageFolder(csv, size, raw=raw, labels="ignore")."""
        return cls(csv, ImageFolder(csv, size, raw=raw, labels="ignore"), targets)

    @property
    def config(self) -> dict[str, Any]:
        """How the files are decoded (the file check's reader key): the file dataset's."""
        config = getattr(self.files, "config", None)
        return dict(config) if isinstance(config, dict) else {"size": getattr(self.files, "size", None)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        return self.files[index][0], self._float32[index]

    def __repr__(self) -> str:
        mean, std = self.targets.mean(0), self.targets.std(0)
        stats = ", ".join(f"{n} {m:.4g} +- {s:.3g}" for n, m, s in zip(self.target_names, mean, std))
        return f"RegressionFolder({str(self.csv)!r}, {len(self)} files, targets {{{stats}}})"
