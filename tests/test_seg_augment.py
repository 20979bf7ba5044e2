"""Augmentation moves a mask with its image: Augment3D (flips exactly, rotations/zoom/shift on the same
grid with nearest), albumentations' mask target in 2D; check_augmentation names a mask whose labels were
interpolated or whose classes changed, and still flags seed 001's clip before gamma on the image."""

import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nbtools as nbt
from nbtools.data import (
    AlbumentationsDataset,
    Augment3D,
    SegmentationFolder,
    SyntheticSegImages,
    SyntheticSegVolumes,
    write_segmentation_folder,
)
from nbtools.data.augment2d import apply_transform, segmentation_augmentation
from nbtools.data.augment3d import _COLUMNS

OFF = dict(p_flip=0, p_rotate=0, p_zoom=0, p_translate=0, p_gamma=0, p_scale=0, p_shift=0)


def _planted(b=4, shape=(20, 24, 28)):
    """Masks with two blobs, and images that are the masks times 10: the structure is planted exactly."""
    ds = SyntheticSegVolumes(b, shape=shape, num_classes=3, seed=2)
    mask = torch.stack([ds[i][1] for i in range(b)])
    return 10.0 * mask.unsqueeze(1).float(), mask


def test_flipped_masks_equal_the_flipped_images_planted_structure():
    x, mask = _planted()
    torch.manual_seed(0)
    out, moved = Augment3D(**{**OFF, "p_flip": 0.5})(x, mask)
    assert moved.dtype == torch.int64 and torch.equal(out[:, 0], 10.0 * moved.float())
    assert not torch.equal(moved, mask)  # something flipped


def test_rotation_zoom_and_shift_move_the_mask_on_the_images_grid_with_nearest():
    x, mask = _planted()
    aug = Augment3D(**{**OFF, "p_rotate": 1, "p_zoom": 1, "p_translate": 1}, max_degrees=25)
    torch.manual_seed(1)
    out, moved = aug(x, mask)
    for i in range(len(mask)):
        assert set(moved[i].unique().tolist()) <= set(mask[i].unique().tolist())  # no invented id
    # the image went through trilinear, the mask through nearest, on the same grid: inside a region
    # (a voxel whose 3^3 neighbours are one class) they agree; the mask left where it was does not
    m = moved.unsqueeze(1).float()
    interior = (F.max_pool3d(m, 3, 1, 1) == -F.max_pool3d(-m, 3, 1, 1))[:, 0] & (moved > 0)
    image_class = out[:, 0].div(10).round().long()
    assert interior.sum() > 500
    wrong = int((image_class != moved)[interior].sum())
    assert wrong <= 0.001 * int(interior.sum()) and int((image_class != mask)[interior].sum()) > 10 * max(
        1, wrong
    )
    # a linear resampling of the same masks would have invented ids: the check above can fail
    linear = F.grid_sample(
        mask.unsqueeze(1).float(), torch.zeros(4, 20, 24, 28, 3) + 0.013, align_corners=False
    )
    assert ((linear - linear.round()).abs() > 1e-3).any()


def test_the_image_is_augmented_the_same_with_a_mask_or_with_labels():
    x, mask = _planted()
    aug = Augment3D(p_gamma=0.5, p_scale=0.5, p_shift=0.5)
    torch.manual_seed(3)
    with_mask, _ = aug(x, mask)
    torch.manual_seed(3)
    with_labels, labels = aug(x, torch.tensor([0, 1, 1, 0]))
    assert torch.equal(with_mask, with_labels) and labels.tolist() == [0, 1, 1, 0]


def test_intensity_ops_leave_the_mask_alone():
    x, mask = _planted()
    out, moved = Augment3D(**{**OFF, "p_gamma": 1, "p_scale": 1, "p_shift": 1})(x, mask)
    assert torch.equal(moved, mask) and not torch.equal(out, x)


def test_samples_that_are_only_flipped_and_resampled_in_one_batch_move_their_masks():
    x, mask = _planted()
    u = torch.full((4, _COLUMNS), 0.99, dtype=torch.float64)
    u[0, 0] = 0.0  # sample 0: flip D only
    u[1, 3] = 0.0  # sample 1: rotate
    u[1, 9:12] = 0.9
    out, moved = Augment3D(0.5, 0.5, 0.5, 0.5, 0, 0, 0)._apply(x, u, mask)
    assert torch.equal(moved[0], mask[0].flip(0)) and torch.equal(out[0, 0], 10.0 * moved[0].float())
    assert not torch.equal(moved[1], mask[1]) and torch.equal(moved[2:], mask[2:])


def test_one_hot_masks_move_like_class_id_masks_and_bad_shapes_are_named():
    x, mask = _planted()
    one_hot = F.one_hot(mask, 3).permute(0, 4, 1, 2, 3).float()
    aug = Augment3D(p_flip=0.5, p_rotate=1, p_gamma=0)
    torch.manual_seed(4)
    _, moved = aug(x, mask)
    torch.manual_seed(4)
    _, moved_hot = aug(x, one_hot)
    assert torch.equal(moved_hot.argmax(1), moved) and torch.equal(
        moved_hot.sum(1), torch.ones_like(moved_hot[:, 0])
    )
    with pytest.raises(ValueError, match=r"a mask must be \(B, D, H, W\) = \(4, 20, 24, 28\)"):
        aug(x, mask[:, :, :, :-1])


def test_albumentations_moves_2d_masks_through_albumentations_dataset(tmp_path):
    images = SyntheticSegImages(4, size=40, num_classes=3, seed=0, raw=True)
    ds = SegmentationFolder(write_segmentation_folder(images, tmp_path / "png"), patch=None, raw=True)
    flipped = AlbumentationsDataset(ds, A.Compose([A.HorizontalFlip(p=1.0)]))
    x, mask = flipped[2]
    assert x.shape == (3, 40, 40) and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(images[2][1][:, ::-1].copy()))
    torch.testing.assert_close(x, nbt.data.augment2d.to_tensor(images[2][0][:, ::-1]))
    train = AlbumentationsDataset(ds, segmentation_augmentation(size=32))
    torch.manual_seed(0)
    for i in range(4):
        x, mask = train[i]
        assert x.shape == (3, 32, 32) and set(mask.unique().tolist()) <= {0, 1, 2}


def test_a_plain_callable_cannot_move_a_mask():
    image, mask = SyntheticSegImages(1, size=16, raw=True)[0]
    with pytest.raises(TypeError, match="must be an albumentations transform"):
        apply_transform(lambda im: im, image, mask)


def _two_class_samples(n=4, size=32):
    """Float images with masks holding classes 0 and 2 only: linear interpolation at their border makes 1."""
    out = []
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[6 + i : 20 + i, 8:22] = 2
        image = (
            mask[..., None] / 2.0 + 0.05 * np.random.default_rng(i).standard_normal((size, size, 1))
        ).astype(np.float32)
        out.append((image, mask))
    return out


def test_check_augmentation_names_interpolated_labels_and_lost_classes():
    linear = A.Compose([A.Affine(rotate=(20, 30), mask_interpolation=cv2.INTER_LINEAR, p=1.0)])
    rep = nbt.check_augmentation(linear, _two_class_samples())
    issue = next(i for i in rep.issues if i.kind == "mask_interpolated")
    assert issue.op == "op 0 Affine" and "class ids {1} that were not in the input {0, 2}" in issue.detail
    nearest = A.Compose([A.Affine(rotate=(20, 30), mask_interpolation=cv2.INTER_NEAREST, p=1.0)])
    assert not any(
        i.kind.startswith("mask") for i in nbt.check_augmentation(nearest, _two_class_samples()).issues
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # albumentations warns that a lambda does not pickle
        rescale = A.Lambda(mask=lambda m, **kw: (m / 255).astype(np.uint8), p=1.0)
    rep = nbt.check_augmentation(A.Compose([A.HorizontalFlip(), rescale]), _two_class_samples())
    lost = next(i for i in rep.issues if i.kind == "mask_classes")
    assert lost.op == "op 1 Lambda" and "class {2} of {0, 2} gone" in lost.detail


def test_check_augmentation_runs_augment3d_on_masks_and_still_flags_seed_001_on_the_image(tmp_path):
    vols = SyntheticSegVolumes(4, shape=(20, 20, 20), seed=0)
    rep = nbt.check_augmentation(Augment3D(p_rotate=1, p_flip=1), vols, trials=2)
    assert not any(i.kind.startswith("mask") for i in rep.issues), str(rep)

    def blurs_the_mask(x, mask):  # a warp written by hand that forgot the mask is not an image
        return x, F.avg_pool3d(mask[None, None].float(), 3, 1, 1)[0, 0]

    rep = nbt.check_augmentation(blurs_the_mask, vols, trials=1)
    assert any(i.kind == "mask_interpolated" and "not whole numbers" in i.detail for i in rep.issues)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = A.Lambda(image=lambda x, **kw: np.clip(x, 0, None), p=1.0)
    zscored = [((im - im.mean()) / im.std(), m) for im, m in _two_class_samples()]
    rep = nbt.check_augmentation(A.Compose([clip, A.RandomGamma(p=0.25)]), zscored)
    kinds = {(i.op, i.kind) for i in rep.issues}
    assert ("op 0 Lambda", "mean_shift") in kinds and not any(k.startswith("mask") for _, k in kinds)
