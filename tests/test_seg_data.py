"""SegmentationFolder on real files (nibabel, PIL) in every layout, the bad inputs it names before any
training, its split/record views, the fingerprint of masks, and the synthetic sets it is demoed on."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nbtools as nbt
from nbtools.data import (
    SegmentationDataError,
    SegmentationFolder,
    SyntheticSegImages,
    SyntheticSegVolumes,
    write_segmentation_folder,
)
from nbtools.data.segwrite import AFFINE


@pytest.fixture(scope="module")
def vols():
    return SyntheticSegVolumes(4, shape=(16, 20, 24), num_classes=3, seed=0)


@pytest.fixture
def folder(tmp_path, vols):
    return write_segmentation_folder(vols, tmp_path / "seg")


def _save(array, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def test_images_labels_layout_gives_float_images_and_the_masks_as_written(folder, vols):
    ds = SegmentationFolder(folder, patch=None)
    assert (len(ds), ds.layout, ds.ndim, ds.channels) == (4, "images/labels", 3, 1)
    assert ds.classes == ["background", "class_1", "class_2"] and ds.num_classes == 3
    assert ds.cases == ["case_000", "case_001", "case_002", "case_003"]
    for i in range(len(ds)):
        x, mask = ds[i]
        assert x.shape == (1, 16, 20, 24) and x.dtype == torch.float32
        assert mask.dtype == torch.int64 and torch.equal(mask, vols[i][1])
        assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2  # z-scored from scanner units
        np.testing.assert_allclose(ds.affines[i], AFFINE)
    assert ds.class_voxels.sum() == 4 * 16 * 20 * 24 and (ds.class_voxels[:, 1:] > 0).all()


@pytest.mark.parametrize("layout", ["images/masks", "csv", "nnunet"])
def test_every_layout_gives_the_same_items(tmp_path, vols, folder, layout):
    reference = SegmentationFolder(folder, patch=None)
    ds = SegmentationFolder(write_segmentation_folder(vols, tmp_path / "other", layout), patch=None)
    assert ds.layout == layout and ds.cases == reference.cases
    for i in range(len(ds)):
        assert all(torch.equal(a, b) for a, b in zip(ds[i], reference[i]))


def test_nnunet_layout_stacks_channels_in_order_and_names_v2_labels(tmp_path):
    root = tmp_path / "Dataset001_Brain"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in ("BRATS_001", "BRATS_002"):  # underscores in case names: the channel is the last _XXXX
        for k in range(2):
            _save(
                rng.normal(100 * (k + 1), 10 * (k + 1), (8, 9, 10)).astype(np.float32),
                root / "imagesTr" / f"{case}_{k:04d}.nii.gz",
            )
        _save(rng.integers(0, 3, (8, 9, 10)).astype(np.uint8), root / "labelsTr" / f"{case}.nii.gz")
    labels = {"background": 0, "grey_matter": 1, "white_matter": 2}
    meta = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": labels,
        "file_ending": ".nii.gz",
        "numTraining": 2,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = SegmentationFolder(root, patch=None, normalize=None)
    assert ds.layout == "nnunet" and ds.cases == ["BRATS_001", "BRATS_002"] and ds.channels == 2
    assert ds.classes == ["background", "grey_matter", "white_matter"]
    x, mask = ds[0]
    assert x.shape == (2, 8, 9, 10) and mask.shape == (8, 9, 10)
    assert 80 < float(x[0].mean()) < 120 and 180 < float(x[1].mean()) < 220  # _0000 first, _0001 second


def test_nnunet_v1_labels_are_read_too(tmp_path, vols):
    root = write_segmentation_folder(vols, tmp_path / "v1", "nnunet")
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "tumour", "2": "oedema"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert SegmentationFolder(root).classes == ["background", "tumour", "oedema"]


@pytest.mark.parametrize("palette", [False, True])
def test_png_images_with_grey_or_palette_masks(tmp_path, palette):
    images = SyntheticSegImages(3, size=32, num_classes=3, seed=0, raw=True)
    root = write_segmentation_folder(images, tmp_path / "png", palette=palette)
    assert Image.open(next((root / "labels").iterdir())).mode == ("P" if palette else "L")
    ds = SegmentationFolder(root, patch=None)
    assert (ds.ndim, ds.channels, ds.normalize) == (2, 3, "imagenet")
    x, mask = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(mask, torch.from_numpy(images[1][1]))
    torch.testing.assert_close(x, nbt.data.augment2d.to_tensor(images[1][0]))
    raw_x, raw_mask = SegmentationFolder(root, patch=None, raw=True)[1]
    assert (
        raw_x.dtype == np.uint8
        and np.array_equal(raw_x, images[1][0])
        and np.array_equal(raw_mask, images[1][1])
    )
    small = SegmentationFolder(root, size=16)  # masks resized by nearest neighbour: no new ids
    assert small.patch is None and small[0][0].shape == (3, 16, 16)
    assert set(small[0][1].unique().tolist()) <= {0, 1, 2}


def test_classes_argument_names_the_classes_and_default_names_count_up(folder):
    assert SegmentationFolder(folder, classes=["bg", "liver", "tumour"]).classes == ["bg", "liver", "tumour"]
    with pytest.raises(ValueError, match="at least 2"):
        SegmentationFolder(folder, classes=["bg"])


def _problem(tmp_path, vols, change):
    root = write_segmentation_folder(vols, tmp_path / "bad")
    change(root)
    with pytest.raises(SegmentationDataError) as e:
        SegmentationFolder(root)
    assert isinstance(e.value, ValueError)
    return str(e.value)


def test_an_image_without_a_mask_and_a_mask_without_an_image_are_named(tmp_path, vols):
    def change(root):
        (root / "labels" / "case_001.nii.gz").unlink()
        (root / "images" / "case_003.nii.gz").unlink()

    msg = _problem(tmp_path, vols, change)
    assert (
        "2 problems" in msg and "case_001.nii.gz has no mask" in msg and "case_003.nii.gz has no image" in msg
    )


def test_shape_and_affine_mismatches_name_the_case(tmp_path, vols):
    def change(root):
        _save(np.zeros((16, 20, 23), np.uint8), root / "labels" / "case_000.nii.gz")
        shifted = AFFINE.copy()
        shifted[0, 3] += 1.2  # one voxel along the first axis
        _save(vols[2][1].numpy().astype(np.uint8), root / "labels" / "case_002.nii.gz", shifted)

    msg = _problem(tmp_path, vols, change)
    assert "case 'case_000'" in msg and "(16, 20, 24)" in msg and "(16, 20, 23)" in msg
    assert "case 'case_002'" in msg and "different affines" in msg and "origin (-28.8" in msg


def test_rounding_of_the_affine_is_not_a_mismatch(tmp_path, vols):
    root = write_segmentation_folder(vols, tmp_path / "ok")
    _save(vols[0][1].numpy().astype(np.uint8), root / "labels" / "case_000.nii.gz", AFFINE + 1e-5)
    assert len(SegmentationFolder(root)) == 4


def test_mask_values_outside_the_classes_are_named(tmp_path, vols):
    root = write_segmentation_folder(vols, tmp_path / "ids", "nnunet")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "lesion": 1}  # the masks hold class 2 as well
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(
        SegmentationDataError, match=r"case 'case_000'.*class id \[2\], outside the 2 classes"
    ):
        SegmentationFolder(root)


def test_float_masks_with_fractions_are_refused_and_whole_floats_accepted(tmp_path, vols):
    def change(root):
        m = vols[1][1].numpy().astype(np.float32)
        m[3, 3, 3] = 0.5  # what linear resampling does to a mask
        _save(m, root / "labels" / "case_001.nii.gz")

    msg = _problem(tmp_path, vols, change)
    assert "case 'case_001'" in msg and "not class ids (e.g. 0.5" in msg and "nearest-neighbour" in msg
    root = write_segmentation_folder(vols, tmp_path / "whole")
    _save(vols[1][1].numpy().astype(np.float32), root / "labels" / "case_001.nii.gz")
    assert torch.equal(SegmentationFolder(root, patch=None)[1][1], vols[1][1])


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(SegmentationDataError, match="holds no cases"):
        SegmentationFolder(tmp_path)
    with pytest.raises(SegmentationDataError, match="no images/ folder"):
        SegmentationFolder(tmp_path / "labels")


def test_a_missing_nnunet_channel_is_named(tmp_path, vols):
    root = write_segmentation_folder(vols, tmp_path / "nn", "nnunet")
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegmentationDataError, match=r"case 'case_000' has no channel file case_000_0001"):
        SegmentationFolder(root)


def test_png_mask_mistakes_are_named(tmp_path):
    images = SyntheticSegImages(2, size=24, num_classes=2, seed=0, raw=True)
    root = write_segmentation_folder(images, tmp_path / "png")
    white = (images[0][1] * 255).astype(np.uint8)
    Image.fromarray(white).save(root / "labels" / "case_000.png")
    Image.fromarray((images[1][1] * 255).astype(np.uint8)).save(root / "labels" / "case_001.png")
    with pytest.raises(SegmentationDataError, match=r"only the values 0 and 255.*as 0/1"):
        SegmentationFolder(root)
    Image.fromarray(np.stack([white, 0 * white, white], axis=2)).save(root / "labels" / "case_001.png")
    with pytest.raises(SegmentationDataError, match=r"case_001\.png is a colour"):
        SegmentationFolder(root)
    (root / "labels" / "case_001.png").rename(root / "labels" / "case_001.jpg")
    with pytest.raises(SegmentationDataError, match="is a JPEG"):
        SegmentationFolder(root)


def test_csv_rows_that_point_nowhere_are_named(tmp_path, vols):
    csv = write_segmentation_folder(vols, tmp_path / "c", "csv")
    csv.write_text(csv.read_text() + "images/case_009.nii.gz,labels/case_009.nii.gz\n")
    with pytest.raises(SegmentationDataError, match=r"row 6: image .*case_009.nii.gz does not exist"):
        SegmentationFolder(csv)


def test_split_is_by_case_reproducible_and_validates_on_whole_cases(folder):
    ds = SegmentationFolder(folder, patch=(8, 8, 8))
    train, val = ds.split(fraction=0.25, seed=0)
    assert sorted(train.cases + val.cases) == ds.cases and not set(train.cases) & set(val.cases)
    assert train.patch == (8, 8, 8) and val.patch is None and val[0][0].shape == (1, 16, 20, 24)
    assert ds.split(fraction=0.25, seed=0)[1].cases == val.cases
    folds = [ds.split(k=2, fold=f)[1].cases for f in range(2)]
    assert sorted(folds[0] + folds[1]) == ds.cases


@pytest.mark.parametrize("layout", ["images/labels", "csv"])
def test_record_rebuilds_the_dataset_even_from_a_moved_folder(tmp_path, vols, layout):
    path = write_segmentation_folder(vols, tmp_path / "here", layout)
    ds = SegmentationFolder(path, patch=(8, 8, 8), oversample=0.5, seed=3).split(0.5)[0]
    ds.set_epoch(2)
    expected = ds[0]
    record = json.loads(json.dumps(ds.record))  # it is plain JSON
    again = SegmentationFolder.from_record(record)
    assert again.cases == ds.cases and again.patch == (8, 8, 8) and again.oversample == 0.5
    moved = (tmp_path / "here").rename(tmp_path / "moved")
    elsewhere = SegmentationFolder.from_record(record, root=moved)
    elsewhere.set_epoch(2)
    assert elsewhere.cases == ds.cases and all(torch.equal(a, b) for a, b in zip(expected, elsewhere[0]))


def test_fingerprint_lists_masks_and_changes_when_a_mask_changes_at_the_same_size(tmp_path, vols):
    root = tmp_path / "npy"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        np.save(root / "images" / f"c{i}.npy", vols[i][0][0].numpy())
        np.save(root / "labels" / f"c{i}.npy", vols[i][1].numpy())
    before = nbt.data.data_fingerprint(SegmentationFolder(root))
    assert before["kind"] == "segmentation" and before["n_files"] == 6
    assert sorted(f[2].split(":")[1] for f in before["files"]) == ["image"] * 3 + ["mask"] * 3
    mask = np.load(root / "labels" / "c1.npy")
    mask[0, 0, 0] = 1 - min(mask[0, 0, 0], 1)
    np.save(root / "labels" / "c1.npy", mask)  # same dtype and shape: the same file size
    after = nbt.data.data_fingerprint(SegmentationFolder(root))
    change = nbt.data.compare_fingerprints(before, after)
    assert not change.same and change.relabelled[0][0] == "labels/c1.npy" and not change.resized
    (root / "labels" / "c2.npy").unlink()
    (root / "images" / "c2.npy").unlink()
    change = nbt.data.compare_fingerprints(before, nbt.data.data_fingerprint(SegmentationFolder(root)))
    assert set(change.removed) == {"images/c2.npy", "labels/c2.npy"}


def test_synthetic_sets_are_seeded_and_hold_every_class():
    a, b = SyntheticSegVolumes(3, seed=4), SyntheticSegVolumes(3, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a[2], b[2]))
    assert not torch.equal(a[0][0], SyntheticSegVolumes(3, seed=5)[0][0])
    for ds in (a, SyntheticSegImages(3, num_classes=4)):
        for i in range(3):
            assert sorted(torch.as_tensor(ds[i][1]).unique().tolist()) == list(range(ds.num_classes))
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticSegVolumes(2, num_classes=1)


def _dice(pred, mask, c):
    p, t = pred == c, mask == c
    return float(2 * (p & t).sum() / max(1, int(p.sum() + t.sum())))


@pytest.mark.slow  # ~5 s on an idle 2-core CPU, a minute when it is shared
def test_a_small_network_learns_the_2d_set():
    train, val = (
        SyntheticSegImages(16, size=32, num_classes=3, seed=0),
        SyntheticSegImages(8, size=32, num_classes=3, seed=1),
    )
    x, m = (torch.stack(t) for t in zip(*[train[i] for i in range(16)]))
    xv, mv = (torch.stack(t) for t in zip(*[val[i] for i in range(8)]))
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, 3, 1),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-2)
    for _ in range(90):
        loss = nn.functional.cross_entropy(net(x), m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(xv).argmax(1)
    learned = [_dice(pred, mv, c) for c in (1, 2)]
    assert min(learned) > 0.85, learned


def _best_threshold_dice(v, mask, c):
    """The best Dice for class c of any band lo < v <= hi: what a per-voxel intensity rule can reach."""
    bands = [(lo, hi) for lo in np.linspace(-1, 5, 13) for hi in np.linspace(lo, 6, 8)]
    t = mask == c
    return max(
        float(2 * (p & t).sum() / max(1, p.sum() + t.sum()))
        for p in ((v > lo) & (v <= hi) for lo, hi in bands)
    )


def test_the_3d_set_needs_the_blobs_extent_which_a_convolution_sees():
    """Class 1 (2.5 noise stds) is not one intensity band voxel by voxel; averaged over 3^3 voxels,
    which one convolution does, it is: a small U-Net learns it, a threshold does not."""
    from scipy import ndimage

    ds = SyntheticSegVolumes(4, num_classes=3, seed=1)
    raw, smooth = [], []
    for i in range(4):
        x, mask = ds[i][0][0].numpy(), ds[i][1].numpy()
        raw.append(_best_threshold_dice(x, mask, 1))
        smooth.append(_best_threshold_dice(ndimage.uniform_filter(x, 3), mask, 1))
    assert np.mean(raw) < 0.6 and np.mean(smooth) > 0.7 and np.mean(smooth) > np.mean(raw) + 0.15, (
        raw,
        smooth,
    )


def test_images_without_masks_read_unlabelled_for_prediction(tmp_path, vols):
    root = write_segmentation_folder(vols, tmp_path / "new")
    for p in (root / "labels").iterdir():
        p.unlink()
    (root / "labels").rmdir()
    with pytest.raises(SegmentationDataError, match="masks='optional'"):
        SegmentationFolder(root)
    ds = SegmentationFolder(root, patch=None, masks="optional")
    x, label = ds[0]
    assert not ds.labeled and label == -1 and x.shape == (1, 16, 20, 24)
    assert nbt.data.data_fingerprint(ds)["n_files"] == 4
    with pytest.raises(SegmentationDataError, match=r"\['case_404'\] not found"):
        SegmentationFolder(root, masks="optional", cases=["case_000", "case_404"])


def test_nnunet_2d_grey_channels_are_stacked(tmp_path):
    root = tmp_path / "Dataset002_Road"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        for k in range(2):
            grey = rng.integers(40 + 100 * k, 60 + 100 * k, (12, 14), dtype=np.uint8)
            Image.fromarray(grey).save(root / "imagesTr" / f"{case}_{k:04d}.png")
        Image.fromarray(rng.integers(0, 2, (12, 14), dtype=np.uint8)).save(root / "labelsTr" / f"{case}.png")
    ds = SegmentationFolder(root, patch=None, normalize=None)
    x, mask = ds[1]
    assert (ds.ndim, ds.channels) == (2, 2) and x.shape == (2, 12, 14) and mask.shape == (12, 14)
    assert 40 <= float(x[0].mean()) < 60 and 140 <= float(x[1].mean()) < 160
    assert SegmentationFolder(root, patch=None).normalize == "zscore"  # not RGB: no ImageNet statistics
