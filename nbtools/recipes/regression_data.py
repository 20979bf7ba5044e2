"""The user's regression data for a recipe: a CSV of files with real-valued targets (`path,target`, several
target columns or named ones), a second CSV for validation or a random hold-out of the first, and what the
run records of it, so a resume rebuilds exactly that data and refuses changed targets.

meta["data"] is the classification record (see user_data) with "task": "regression", "classes": the
target columns (the model has one output per column; a resume on other columns is refused), "positive":
None, "targets": {"names", "mean", "std", "min", "max"} of the training part, and a fingerprint that
labels every file with its targets (nbtools.data.fingerprint), so a changed value is named on resume.
The hold-out is a plain random one (`fraction`, `seed`), not stratified: there are no classes to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Subset

from nbtools.data import data_fingerprint
from nbtools.data.regression_folder import RegressionFolder
from nbtools.recipes.user_data import UserData, index_digest

OpenCsv = Callable[[str | Path, Sequence[str] | None], RegressionFolder]


def regression_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) sorted: a random hold-out of `fraction` of n samples (scikit-learn's
    train_test_split with random_state=seed), so a resume rebuilds it exactly."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}")
    n_val = round(n * fraction)
    if n < 2 or not 1 <= n_val < n:
        raise ValueError(
            f"a {fraction:.0%} hold-out of {n} samples leaves {n_val} for validation and {n - n_val} for "
            f"training; both need at least one: add rows, or pass a validation CSV (val=)"
        )
    tr, va = train_test_split(np.arange(n), test_size=n_val, random_state=seed)
    return np.sort(tr), np.sort(va)


def _check_csv(path: str | Path, part: str) -> None:
    if Path(path).suffix.lower() != ".csv":
        raise ValueError(
            f"{part}={str(path)!r}: regression data is a CSV with a header row `path,target` (or several "
            f"target columns, e.g. path,target_0,target_1, or named ones, path,age); a folder of class "
            f"sub-folders is classification (task='classification')"
        )


def target_summary(values: np.ndarray, names: list[str]) -> dict[str, Any]:
    """{"names", "mean", "std", "min", "max"} per target column, plain floats for the run's JSON."""
    v = np.asarray(values, dtype=np.float64)
    stats = {k: getattr(v, k)(axis=0).tolist() for k in ("mean", "std", "min", "max")}
    return {"names": list(names), **stats}


def build_regression_data(
    open_csv: OpenCsv,
    data: str | Path,
    val: str | Path | None,
    targets: Sequence[str] | None,
    fraction: float,
    seed: int,
) -> UserData:
    """Read `data` (and `val`, pinned to data's target columns) with open_csv(path, targets) -> a
    RegressionFolder, and split: `val` given, it is the validation set; None, a random hold-out."""
    _check_csv(data, "data")
    folder = open_csv(data, targets)
    names = list(folder.target_names)
    if val is None:
        tr, va = regression_holdout(len(folder), fraction, seed)
        train, val_part, val_folder = Subset(folder, tr.tolist()), Subset(folder, va.tolist()), None
        split = {"kind": "holdout", "fraction": fraction, "seed": seed, "val_sha256": index_digest(va)}
        train_values = folder.targets[tr]
    else:
        _check_csv(val, "val")
        val_folder = open_csv(val, names)
        train, val_part, split = folder, val_folder, {"kind": "folder"}
        train_values = folder.targets
    split.update(n_train=len(train), n_val=len(val_part))
    record = {
        "task": "regression",
        "source": {
            "data": str(data),
            "data_resolved": str(Path(data).resolve()),
            "val": None if val is None else str(val),
            "val_resolved": None if val is None else str(Path(val).resolve()),
        },
        "classes": names,
        "positive": None,
        "targets": target_summary(train_values, names),
        "split": split,
        "fingerprint": {
            "train": data_fingerprint(folder),
            "val": None if val_folder is None else data_fingerprint(val_folder),
        },
    }
    return UserData(folder, val_folder, train, val_part, record)
