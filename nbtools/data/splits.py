"""Stratified k-fold splits: every fold keeps the class ratios, and the same seed gives the same folds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def kfold(
    labels: Sequence[int] | np.ndarray, k: int = 5, fold: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) of fold `fold` out of `k`: int64 index arrays into `labels`, sorted.

    Stratified (scikit-learn `StratifiedKFold(shuffle=True, random_state=seed)`): each validation fold
    holds about 1/k of every class. The folds depend on (labels, k, seed) only, so a resumed run or
    another machine gets the same split. Every class needs at least k samples, so that each fold's
    validation set sees it.

    >>> tr, va = kfold(ds.labels, k=5, fold=0, seed=0)                       # doctest: +SKIP
    >>> train_ds, val_ds = Subset(ds, tr), Subset(ds, va)                     # doctest: +SKIP
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence (one label per sample), got shape {y.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < k:
        raise ValueError(f"fold must be an int in [0, {k}) for k={k}, got {fold!r}")
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < k:
        c = classes[counts.argmin()].item()  # a Python value: the message shows 1, not np.int64(1)
        fix = f"lower k to {counts.min()}" if counts.min() >= 2 else "merge or drop that class"
        raise ValueError(
            f"class {c!r} has {counts.min()} samples, fewer than k={k}: some validation folds would not "
            f"contain it; {fix}, or collect more samples"
        )
    from sklearn.model_selection import StratifiedKFold  # here: importing sklearn costs ~1 s

    splitter = StratifiedKFold(n_splits=int(k), shuffle=True, random_state=seed)
    train, val = next(s for i, s in enumerate(splitter.split(np.zeros(len(y)), y)) if i == fold)
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)
