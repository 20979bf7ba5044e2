"""kfold and holdout_split: stratified, a partition, deterministic under the seed, and clear about bad
arguments."""

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


def test_holdout_is_stratified_sorted_and_a_partition():
    labels = np.array([1] * 30 + [0] * 70)
    tr, va = nbt.data.holdout_split(labels, fraction=0.2, seed=0)
    assert tr.dtype == va.dtype == np.int64 and np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert len(va) == 20 and labels[va].sum() == 6 and labels[tr].sum() == 24
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    names = np.array(["forged"] * 10 + ["genuine"] * 30)  # class names work as labels too
    assert (names[nbt.data.holdout_split(names, 0.25)[1]] == "forged").sum() == 3


def test_holdout_is_deterministic_under_its_seed():
    labels = np.random.default_rng(0).integers(0, 3, 60)
    a = nbt.data.holdout_split(labels, fraction=0.3, seed=7)
    b = nbt.data.holdout_split(labels.tolist(), fraction=0.3, seed=7)
    c = nbt.data.holdout_split(labels, fraction=0.3, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_holdout_names_the_class_that_cannot_be_split():
    with pytest.raises(
        ValueError, match=r"class 1 has 1 sample: .*at least 2.*pass a separate validation folder"
    ):
        nbt.data.holdout_split([0] * 10 + [1], fraction=0.2)
    with pytest.raises(
        ValueError, match=r"class 'rare' has 2 samples and fraction=0.1 leaves none in the validation"
    ):
        nbt.data.holdout_split(["common"] * 100 + ["rare"] * 2, fraction=0.1)
    with pytest.raises(
        ValueError, match=r"fraction=0.05 of 20 samples cannot hold out every one of the 2 classes"
    ):
        nbt.data.holdout_split([0, 1] * 10, fraction=0.05)
    with pytest.raises(
        ValueError, match=r"label -1 at index 2 is negative \(-1 marks an unlabelled sample\)"
    ):
        nbt.data.holdout_split([0, 1, -1, 0, 1, 1])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2, True, "0.2"])
def test_holdout_fraction_must_be_in_0_1(fraction):
    with pytest.raises(ValueError, match=rf"fraction must be a number in \(0, 1\).*got {fraction!r}"):
        nbt.data.holdout_split([0, 1] * 10, fraction=fraction)
