"""Training patches: their shape, the padding of small cases, nnU-Net's foreground oversampling measured
over many draws, and patches that are a function of (seed, epoch, index), whatever the loader's workers."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nbtools.data import SegmentationFolder, SyntheticSegVolumes, write_segmentation_folder
from nbtools.data.patches import choose_box, cut


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    vols = SyntheticSegVolumes(6, shape=(24, 28, 32), num_classes=3, seed=0)
    return write_segmentation_folder(vols, tmp_path_factory.mktemp("patches") / "seg")


def _mask(shape=(40, 40, 40)):
    """Background with a small class-1 cube and a tiny class-2 cube: 0.4 % and 0.02 % of the voxels."""
    m = np.zeros(shape, dtype=np.int64)
    m[5:9, 30:34, 10:14] = 1
    m[30:32, 2:4, 33:35] = 2
    return m


def test_patches_have_the_patch_shape_and_cut_image_and_mask_alike(root):
    ds = SegmentationFolder(root, patch=(16, 16, 16))
    whole = SegmentationFolder(root, patch=None)
    ds.set_epoch(0)
    for i in range(len(ds)):
        x, mask = ds[i]
        assert x.shape == (1, 16, 16, 16) and mask.shape == (16, 16, 16) and mask.dtype == torch.int64
        box = ds.patch_box(i)
        region = tuple(slice(s, s + p) for s, p in zip(box.start, box.size))
        full_x, full_mask = whole[i]
        assert torch.equal(x[0], full_x[0][region]) and torch.equal(mask, full_mask[region])
        assert not box.padded


def test_a_case_smaller_than_the_patch_is_padded_and_the_pad_recorded(root):
    ds = SegmentationFolder(root, patch=(20, 32, 32))
    assert ds.pads[0] == (0, 4, 0)  # cases are (24, 28, 32)
    ds.set_epoch(1)
    whole_x, whole_mask = SegmentationFolder(root, patch=None)[0]
    for epoch in range(4):
        box = ds.patch_box(0, epoch)
        (before, after) = box.pad[1]
        assert before + after == 4 and box.pad[0] == box.pad[2] == (0, 0)
        ds.set_epoch(epoch)
        x, mask = ds[0]
        assert x.shape == (1, 20, 32, 32)
        rows = slice(before, 32 - after)
        assert (mask[:, :before] == 0).all() and (mask[:, 32 - after :] == 0).all()
        assert (x[0, :, :before] == whole_x.min()).all()  # padded with the case's minimum (background)
        start = box.start[0]
        assert torch.equal(mask[:, rows], whole_mask[start : start + 20])


@pytest.mark.parametrize("oversample", [1 / 3, 0.5, 0.0])
def test_the_share_of_foreground_centred_patches_is_the_oversample_fraction(oversample):
    mask, n = _mask(), 1500
    boxes = [choose_box(mask, (16, 16, 16), np.random.default_rng([7, i]), oversample) for i in range(n)]
    centred = [b for b in boxes if b.centred_on is not None]
    # binomial std at n=1500 is at most 0.013: 0.04 is three of them
    assert abs(len(centred) / n - oversample) < 0.04
    for b in centred:
        patch = cut(mask, b, 0, None)
        assert (patch == b.centred_on).any()  # the chosen voxel's class is in the patch
    if oversample:
        # the class is drawn first, then a voxel: the tiny class 2 gets half of the centred patches
        share = np.mean([b.centred_on == 2 for b in centred])
        assert 0.4 < share < 0.6
    random_hits = np.mean([(cut(mask, b, 0, None) > 0).any() for b in boxes if b.centred_on is None])
    assert random_hits < 0.4  # a random patch misses the foreground most of the time: why oversample


def test_a_case_without_foreground_gets_random_patches():
    boxes = [
        choose_box(np.zeros((20, 20, 20), np.int64), (8, 8, 8), np.random.default_rng(i), 1.0)
        for i in range(50)
    ]
    assert all(b.centred_on is None for b in boxes) and len({b.start for b in boxes}) > 10


def test_patches_are_a_function_of_seed_epoch_and_index(root):
    a, b = (
        SegmentationFolder(root, patch=(12, 12, 12), seed=5),
        SegmentationFolder(root, patch=(12, 12, 12), seed=5),
    )
    a.set_epoch(3)
    b.set_epoch(3)
    torch.manual_seed(0)
    first = [a[i] for i in (4, 1, 2)]
    torch.manual_seed(1)  # the global RNG plays no part once an epoch is set
    again = [b[i] for i in (4, 1, 2)]  # another instance, another order
    assert all(torch.equal(u, v) for p, q in zip(first, again) for u, v in zip(p, q))
    starts = {a.patch_box(1, e).start for e in range(8)}
    assert len(starts) > 4  # epochs differ
    other = SegmentationFolder(root, patch=(12, 12, 12), seed=6)
    assert [other.patch_box(i, 3).start for i in range(6)] != [a.patch_box(i, 3).start for i in range(6)]


def test_workers_give_the_same_patches_as_the_main_process(root):
    ds = SegmentationFolder(root, patch=(12, 12, 12))
    ds.set_epoch(2)
    batches = [
        list(DataLoader(ds, batch_size=2, num_workers=w, generator=torch.Generator().manual_seed(w)))
        for w in (0, 2)
    ]
    for (x0, m0), (x2, m2) in zip(*batches):
        assert torch.equal(x0, x2) and torch.equal(m0, m2)


def test_without_an_epoch_patches_follow_torchs_global_rng(root):
    ds = SegmentationFolder(root, patch=(12, 12, 12))
    torch.manual_seed(11)
    a = [ds[i][1] for i in range(6)]
    torch.manual_seed(11)
    b = [ds[i][1] for i in range(6)]
    torch.manual_seed(12)
    c = [ds[i][1] for i in range(6)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not all(torch.equal(u, v) for u, v in zip(a, c))
    with pytest.raises(ValueError, match="needs a patch and an epoch"):
        ds.patch_box(0)


def test_bad_patch_arguments_are_named(root):
    with pytest.raises(ValueError, match="3 positive ints"):
        SegmentationFolder(root, patch=(16, 16))
    with pytest.raises(ValueError, match="oversample"):
        SegmentationFolder(root, oversample=1.5)
    assert SegmentationFolder(root).patch == (24, 28, 32)  # "auto": 64^3, no larger than the cases
