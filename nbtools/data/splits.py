"""Stratified splits (k-fold and one hold-out): every part keeps the class ratios, and the same seed gives
the same split."""

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


def holdout_split(
    labels: Sequence[int] | np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a stratified hold-out of `fraction` of the samples, int64 index arrays, sorted.

    scikit-learn `train_test_split(test_size=fraction, stratify=labels, random_state=seed)`: each class
    keeps its ratio in both parts, and the split depends on (labels, fraction, seed) only, so a resumed
    run rebuilds it exactly. Every class must land in both parts; when one cannot, the ValueError names
    it and its count.

    >>> tr, va = holdout_split(ds.labels, fraction=0.2, seed=0)             # doctest: +SKIP
    >>> train_ds, val_ds = Subset(ds, tr), Subset(ds, va)                    # doctest: +SKIP
    """
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence (one label per sample), got shape {y.shape}"
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.floating))
        or not 0 < fraction < 1
    ):
        raise ValueError(
            f"fraction must be a number in (0, 1), the share of samples held out, got {fraction!r}"
        )
    if y.dtype.kind in "iu" and (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        raise ValueError(
            f"label {y[i].item()} at index {i} is negative (-1 marks an unlabelled sample): a hold-out split "
            f"needs every sample's class"
        )
    classes, counts = np.unique(y, return_counts=True)
    fix = "add files to that class, change fraction, or pass a separate validation folder (val=)"
    small = counts.argmin()
    if counts[small] < 2:
        raise ValueError(
            f"class {classes[small].item()!r} has {counts[small]} sample: a stratified hold-out needs at least 2 "
            f"per class (one to train on, one to validate); {fix}"
        )
    from sklearn.model_selection import train_test_split  # here: importing sklearn costs ~1 s

    try:
        train, val = train_test_split(
            np.arange(len(y)), test_size=float(fraction), stratify=y, random_state=seed
        )
    except ValueError as e:  # too few samples overall for one of each class in a part
        raise ValueError(
            f"fraction={fraction} of {len(y)} samples cannot hold out every one of the {len(classes)} classes "
            f"({_counts(classes, counts)}): {e}; use a larger fraction, add files, or pass a separate "
            f"validation folder (val=)"
        ) from None
    for part, idx in (("validation", val), ("training", train)):
        missing = sorted(set(classes.tolist()) - set(y[idx].tolist()))
        if missing:
            c = missing[0]
            raise ValueError(
                f"class {c!r} has {int(counts[classes.tolist().index(c)])} samples and fraction={fraction} "
                f"leaves none in the {part} part; {fix}"
            )
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _counts(classes: np.ndarray, counts: np.ndarray) -> str:
    return ", ".join(f"{c.item()!r}: {int(k)}" for c, k in zip(classes, counts))
