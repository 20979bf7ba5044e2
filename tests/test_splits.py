"""kfold: stratified, a partition, deterministic under its seed, and clear about bad arguments."""

import numpy as np
import pytest

import nbtools as nbt


def test_folds_are_stratified_and_partition_the_data():
    labels = np.array([1] * 30 + [0] * 70)
    vals = []
    for fold in range(5):
        tr, va = nbt.data.kfold(labels, k=5, fold=fold, seed=0)
        assert tr.dtype == np.int64 and va.dtype == np.int64
        assert len(va) == 20 and not set(tr) & set(va) and len(tr) + len(va) == 100
        assert labels[va].sum() == 6  # 30 % of each validation fold is positive
        assert labels[tr].sum() == 24
        vals.append(va)
    assert sorted(np.concatenate(vals).tolist()) == list(range(100))


def test_deterministic_under_its_seed():
    labels = np.random.default_rng(0).integers(0, 3, 60)
    a = nbt.data.kfold(labels, k=4, fold=2, seed=7)
    b = nbt.data.kfold(labels.tolist(), k=4, fold=2, seed=7)
    c = nbt.data.kfold(labels, k=4, fold=2, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_bad_arguments_name_the_value():
    labels = [0, 1] * 10
    with pytest.raises(ValueError, match="k must be an int >= 2, got 1"):
        nbt.data.kfold(labels, k=1)
    with pytest.raises(ValueError, match=r"fold must be an int in \[0, 5\) for k=5, got 5"):
        nbt.data.kfold(labels, k=5, fold=5)
    with pytest.raises(ValueError, match="class 1 has 3 samples, fewer than k=5"):
        nbt.data.kfold([0] * 10 + [1] * 3, k=5)
    with pytest.raises(ValueError, match="1-D"):
        nbt.data.kfold(np.zeros((4, 2)))
