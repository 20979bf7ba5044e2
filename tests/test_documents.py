"""SyntheticDocuments: deterministic, the right shapes and balance, raw pages for albumentations, the
transform before normalisation, and forgeries that are really there."""

import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools.data.augment2d import IMAGENET_MEAN, IMAGENET_STD
from nbtools.data.documents import KINDS, SyntheticDocuments


def test_same_seed_same_pages_other_seed_other_pages():
    a, b = SyntheticDocuments(12, size=64, seed=0), SyntheticDocuments(12, size=64, seed=0)
    for i in (11, 0, 5):  # any order
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    other = SyntheticDocuments(12, size=64, seed=1)
    assert not torch.equal(a[0][0], other[0][0])


def test_page_depends_only_on_seed_and_index():
    short, long = SyntheticDocuments(8, size=64, seed=3), SyntheticDocuments(40, size=64, seed=3)
    assert np.array_equal(short.labels, long.labels[:8])
    assert np.array_equal(short.page(7), long.page(7))
    assert torch.equal(short[-1][0], long[7][0])


def test_shapes_dtypes_and_imagenet_normalisation():
    ds = SyntheticDocuments(6, size=96, seed=0)
    x, y = ds[0]
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32
    assert isinstance(y, int) and y in (0, 1)
    assert ds.labels.dtype == np.int64 and len(ds) == 6
    expected = (ds.page(0).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(x, torch.from_numpy(expected.transpose(2, 0, 1)).float())


def test_about_the_forged_fraction_is_positive():
    ds = SyntheticDocuments(2000, size=64, forged_fraction=0.3, seed=0)
    assert 0.27 < ds.labels.mean() < 0.33
    assert SyntheticDocuments(50, size=64, forged_fraction=0.0).labels.sum() == 0
    assert SyntheticDocuments(50, size=64, forged_fraction=1.0).labels.sum() == 50


def test_raw_mode_gives_uint8_hwc():
    ds = SyntheticDocuments(4, size=64, seed=0, raw=True)
    img, _ = ds[1]
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert np.array_equal(img, ds.page(1))
    assert img.mean() > 150  # light paper, dark text


def test_transform_runs_on_uint8_before_normalisation():
    seen = []

    def invert(img):
        seen.append(img.dtype)
        return 255 - img

    ds = SyntheticDocuments(3, size=64, seed=0, transform=invert)
    x, _ = ds[2]
    assert seen == [np.uint8]
    expected = ((255 - ds.page(2)).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(x, torch.from_numpy(expected.transpose(2, 0, 1)).float())
    raw = SyntheticDocuments(3, size=64, seed=0, raw=True, transform=invert)
    assert np.array_equal(raw[2][0], 255 - raw.page(2))


def test_forgery_changes_its_target_box_only():
    ds = SyntheticDocuments(60, size=64, forged_fraction=0.5, seed=0)
    forged = [i for i in range(len(ds)) if ds.labels[i]]
    assert {ds.forgery(i)["kind"] for i in forged} == set(KINDS)
    assert all(ds.forgery(i) is None for i in range(len(ds)) if not ds.labels[i])
    # Same seed and index with and without the edit: the pages differ inside the target box only.
    clean = SyntheticDocuments(60, size=64, forged_fraction=0.0, seed=0)
    i = forged[0]
    y, x, h, w = ds.forgery(i)["target"]
    diff = np.abs(ds.page(i).astype(int) - clean.page(i).astype(int)).max(axis=2)
    inside = np.zeros_like(diff, dtype=bool)
    pad = 3  # the scanner blur spreads the edge by a pixel or two
    inside[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad] = True
    assert diff[inside].mean() > 2
    assert diff[~inside].max() == 0


def test_validate_dataset_finds_nothing():
    rep = nbt.validate_dataset(SyntheticDocuments(16, size=64, seed=0), num_classes=2)
    assert rep.ok, str(rep)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"size": 16}, "size must be an int >= 32"),
        ({"forged_fraction": 1.5}, r"forged_fraction must be in \[0, 1\], got 1.5"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticDocuments(**{"n": 4, **kwargs})


def test_index_out_of_range_is_an_index_error():
    with pytest.raises(IndexError, match="index 4 is out of range"):
        SyntheticDocuments(4, size=64)[4]
