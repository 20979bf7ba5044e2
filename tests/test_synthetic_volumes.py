"""SyntheticVolumes: shapes, determinism, labels, z-scoring, lesions present, and no trivial shortcut."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

import nbtools as nbt


def _lesion_mask(ds, i):
    les = ds.lesion(i)
    grids = np.ix_(*[np.arange(s) for s in ds.shape])
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, les["centre"], les["radii"], strict=True))
    return d2 < 0.8**2


def test_items_are_float32_volumes_and_int_labels():
    ds = nbt.data.SyntheticVolumes(n=4, shape=(16, 20, 24))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 16, 20, 24)
    assert isinstance(y, int) and y in (0, 1)
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 16, 20, 24) and yb.tolist() == ds.labels.tolist()


def test_deterministic_across_instances_and_access_order():
    a = nbt.data.SyntheticVolumes(n=6, seed=3)
    b = nbt.data.SyntheticVolumes(n=6, seed=3)
    first = {i: a[i][0] for i in (5, 0, 3)}
    for i in range(6):
        assert torch.equal(b[i][0], a[i][0])
    for i, x in first.items():
        assert torch.equal(x, a[i][0])
    assert not torch.equal(nbt.data.SyntheticVolumes(n=6, seed=4)[0][0], a[0][0])


@pytest.mark.parametrize(("n", "fraction"), [(64, 0.3), (10, 0.25), (7, 0.0), (7, 1.0), (1, 0.5)])
def test_label_count_is_exact(n, fraction):
    ds = nbt.data.SyntheticVolumes(n=n, positive_fraction=fraction, shape=(16, 16, 16))
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert int(ds.labels.sum()) == round(n * fraction)


def test_labels_attribute_matches_items_and_positions_are_spread():
    ds = nbt.data.SyntheticVolumes(n=40, shape=(16, 16, 16), seed=1)
    assert [ds[i][1] for i in range(len(ds))] == ds.labels.tolist()
    assert ds.labels[: int(ds.labels.sum())].sum() < ds.labels.sum()  # not simply the first indices


def test_each_volume_is_z_scored():
    ds = nbt.data.SyntheticVolumes(n=8)
    for i in range(len(ds)):
        x = ds[i][0].double()
        assert abs(x.mean().item()) < 1e-4
        assert x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_positives_carry_a_bright_lesion_and_negatives_none():
    ds = nbt.data.SyntheticVolumes(n=16, seed=2)
    for i in range(len(ds)):
        if ds.labels[i]:
            x = ds[i][0][0].numpy()
            mask = _lesion_mask(ds, i)
            assert x[mask].mean() - x[~mask].mean() > 1.0
        else:
            assert ds.lesion(i) is None


def test_lesion_contrast_and_noise_take_effect():
    def lesion_gap(**kw):
        ds = nbt.data.SyntheticVolumes(n=4, positive_fraction=1.0, seed=5, **kw)
        x, mask = ds[0][0][0].numpy(), _lesion_mask(ds, 0)
        return x[mask].mean() - x[~mask].mean()

    assert lesion_gap(lesion_contrast=(4.0, 4.0)) > lesion_gap(lesion_contrast=(1.0, 1.0)) + 1.0

    def roughness(noise):
        x = nbt.data.SyntheticVolumes(n=1, noise=noise)[0][0][0]
        return (x[1:] - x[:-1]).abs().mean().item()

    assert roughness(0.0) < 0.3 * roughness(1.0)


def test_max_intensity_does_not_give_the_label_away():
    ds = nbt.data.SyntheticVolumes(n=96, seed=0)
    peak = np.array([ds[i][0].max().item() for i in range(len(ds))])
    assert roc_auc_score(ds.labels, peak) < 0.8  # measured ~0.5-0.6; a bare lesion would give ~1.0


def test_out_of_range_index_names_index_and_length():
    ds = nbt.data.SyntheticVolumes(n=5, shape=(16, 16, 16))
    with pytest.raises(IndexError, match=r"index 5 .*length 5"):
        ds[5]
    with pytest.raises(IndexError, match=r"index -6 .*length 5"):
        ds[-6]
    assert torch.equal(ds[-1][0], ds[4][0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"shape": (15, 32, 32)}, "shape"),
        ({"shape": (32, 32)}, "shape"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"positive_fraction": -0.1}, "positive_fraction"),
        ({"noise": -1.0}, "noise"),
        ({"seed": -1}, "seed"),
        ({"lesion_radius": (5.0, 9.0), "shape": (16, 16, 16)}, "lesion_radius"),
        ({"lesion_contrast": (0.0, 1.0)}, "lesion_contrast"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        nbt.data.SyntheticVolumes(**kwargs)
