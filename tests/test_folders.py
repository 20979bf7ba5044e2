"""VolumeFolder and image_folder: .npy/.npz/.nii.gz load with the right labels and shapes, preprocessing
does what it says, bad layouts, files and CSV rows are named in the error; unlabelled sources for
prediction, and classes pinned to a training run's."""

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nbtools as nbt
from nbtools.data import VolumeFolder, VolumeReadError


def _vol(shape=(10, 12, 14), seed=0, loc=50.0, scale=10.0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def _npy(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return path


AFFINE = np.array(
    [[1.5, 0, 0, -90.0], [0, 1.5, 0, -120.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]]
)  # spacing, origin


def _nii(path, arr):
    nib = pytest.importorskip("nibabel")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(arr, AFFINE).to_filename(str(path))
    return path


def test_class_folders_of_npy_npz_and_nifti_load_with_labels_and_shapes(tmp_path):
    _npy(tmp_path / "negative" / "a.npy", _vol(seed=1))
    np.savez(tmp_path / "negative" / "b.npz", volume=_vol(seed=2), other=np.zeros(3))  # the first array
    _npy(tmp_path / "positive" / "patient7" / "c.npy", _vol((10, 12, 14, 1), seed=3))  # channel-last 1
    _nii(tmp_path / "positive" / "d.nii.gz", _vol(seed=4))
    (tmp_path / "positive" / "notes.txt").write_text("ignored")
    ds = VolumeFolder(tmp_path, shape=(8, 16, 14))
    assert ds.classes == ["negative", "positive"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert [p.name for p in ds.paths] == ["a.npy", "b.npz", "d.nii.gz", "c.npy"]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 8, 16, 14) and x.dtype == torch.float32 and y == ds.labels[i]
    assert nbt.validate_dataset(ds, num_classes=2).ok


def test_nifti_values_round_trip_exactly(tmp_path):
    arr = _vol(seed=5)
    _nii(tmp_path / "a" / "x.nii.gz", arr)
    x, _ = VolumeFolder(tmp_path, shape=arr.shape, normalize=None)[0]
    assert torch.equal(x[0], torch.from_numpy(arr))


def test_npz_key_takes_effect(tmp_path):
    np.savez(tmp_path / "first.npz", image=_vol(seed=1), mask=np.ones((10, 12, 14)))
    (tmp_path / "a").mkdir()
    (tmp_path / "first.npz").rename(tmp_path / "a" / "first.npz")
    ds = VolumeFolder(tmp_path, shape=(10, 12, 14), normalize=None, npz_key="mask")
    assert torch.equal(ds[0][0], torch.ones(1, 10, 12, 14))
    with pytest.raises(VolumeReadError, match=r"first\.npz has no array 'label'.*\['image', 'mask'\]"):
        VolumeFolder(tmp_path, shape=(10, 12, 14), npz_key="label")[0]


def test_zscore_crop_pad_resize_and_mask_threshold(tmp_path):
    arr = _vol((6, 12, 9), seed=2)
    _npy(tmp_path / "a" / "v.npy", arr)
    z = (arr - arr.astype(np.float64).mean()) / arr.astype(np.float64).std()
    x = VolumeFolder(tmp_path, shape=(6, 12, 9))[0][0][0].numpy()
    assert x.mean() == pytest.approx(0, abs=1e-5) and x.std() == pytest.approx(1, abs=1e-4)
    x = VolumeFolder(tmp_path, shape=(6, 12, 9), normalize="minmax")[0][0][0].numpy()
    assert x.min() == 0.0 and x.max() == 1.0
    # centred crop of H (12 -> 8 keeps 2:10), centred pad of D (6 -> 10: 2 before, 2 after) with the minimum
    x = VolumeFolder(tmp_path, shape=(10, 8, 9))[0][0][0].numpy()
    np.testing.assert_allclose(x[2:8], z[:, 2:10], atol=1e-5)
    assert np.allclose(x[:2], z.min(), atol=1e-5) and np.allclose(x[8:], z.min(), atol=1e-5)
    x = VolumeFolder(tmp_path, shape=(12, 6, 9), resize="resize")[0][0]
    ref = F.interpolate(torch.from_numpy(z).float()[None, None], size=(12, 6, 9), mode="trilinear")[0]
    assert torch.allclose(x, ref, atol=1e-5)
    # foreground z-score: background 0 stays out of the statistics
    fg = np.zeros((8, 8, 8), np.float32)
    fg[2:6, 2:6, 2:6] = _vol((4, 4, 4), seed=3)
    _npy(tmp_path / "a" / "v.npy", fg)
    x = VolumeFolder(tmp_path, shape=(8, 8, 8), mask_threshold=0.0)[0][0][0].numpy()
    inside = x[2:6, 2:6, 2:6]
    assert inside.mean() == pytest.approx(0, abs=1e-5) and inside.std() == pytest.approx(1, abs=1e-4)
    with pytest.raises(ValueError, match=r"mask_threshold=1000.0 leaves no foreground voxels in .*v\.npy"):
        VolumeFolder(tmp_path, shape=(8, 8, 8), mask_threshold=1000.0)[0]


def test_csv_with_names_labels_and_relative_paths(tmp_path):
    for name in ("a", "b", "c"):
        _npy(tmp_path / "vols" / f"{name}.npy", _vol(seed=ord(name)))
    (tmp_path / "labels.csv").write_text(
        "path,label\nvols/a.npy,tumour\nvols/b.npy,healthy\nvols/c.npy,tumour\n"
    )
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8), csv="labels.csv")
    assert ds.classes == ["healthy", "tumour"] and ds.labels.tolist() == [1, 0, 1]
    assert ds[0][0].shape == (1, 8, 8, 8)


def test_csv_bad_rows_are_all_named(tmp_path):
    _npy(tmp_path / "a.npy", _vol())
    (tmp_path / "bad.csv").write_text(
        "path,label\na.npy,0\nmissing.npy,1\na.npy,1.5\na.npy,\nnotes.txt,1\na.npy,-2\n"
    )
    with pytest.raises(ValueError) as e:
        VolumeFolder(tmp_path, shape=(8, 8, 8), csv=tmp_path / "bad.csv")
    msg = str(e.value)
    assert "bad.csv: 5 bad rows" in msg
    for needle in (
        "row 3: file",
        "missing.npy does not exist",
        "row 4: label '1.5'",
        "row 5: empty label",
        "row 6: notes.txt is not",
        "row 7: label -2 is negative",
    ):
        assert needle in msg, needle
    (tmp_path / "cols.csv").write_text("file,class\na.npy,0\n")
    with pytest.raises(ValueError, match=r"columns path,label; found \['file', 'class'\]"):
        VolumeFolder(tmp_path, shape=(8, 8, 8), csv=tmp_path / "cols.csv")


def test_bad_layouts_name_the_folder_and_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder.*expected layout"):
        VolumeFolder(tmp_path / "nowhere", shape=(8, 8, 8))
    with pytest.raises(ValueError, match=rf"{tmp_path} has no class subfolders; expected layout"):
        VolumeFolder(tmp_path, shape=(8, 8, 8))
    _npy(tmp_path / "loose.npy", _vol())
    with pytest.raises(ValueError, match=r"holds 1 volume files directly, e\.g\. loose\.npy: move them"):
        VolumeFolder(tmp_path, shape=(8, 8, 8))
    _npy(tmp_path / "good" / "a.npy", _vol())
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "slice1.dcm").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"class folder .*dicom holds no .*\(found 1 \.dcm\)"):
        VolumeFolder(tmp_path, shape=(8, 8, 8))


def test_unreadable_file_is_named(tmp_path):
    path = _npy(tmp_path / "a" / "broken.npy", _vol())
    path.write_bytes(path.read_bytes()[:100])  # truncated
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8))
    with pytest.raises(VolumeReadError, match=r"cannot read .*broken\.npy .*truncated"):
        ds[0]
    _npy(tmp_path / "a" / "broken.npy", np.zeros((4, 4)))
    with pytest.raises(VolumeReadError, match=r"broken\.npy holds an array of shape \(4, 4\); expected a 3D"):
        ds[0]


def test_missing_nibabel_is_a_clear_import_error(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.nii.gz").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # what `import nibabel` sees when it is not installed
    with pytest.raises(
        ImportError, match=r"x\.nii\.gz needs nibabel, a dependency of nbtools: pip install 'nibabel>=5.2'"
    ):
        VolumeFolder(tmp_path, shape=(8, 8, 8))[0]


def test_nan_voxels_stay_for_validate_dataset_to_find(tmp_path):
    arr = _vol(seed=1)
    arr[1, 2, 3] = math.nan
    _npy(tmp_path / "a" / "0.npy", _vol(seed=0))
    _npy(tmp_path / "a" / "1.npy", arr)
    rep = nbt.validate_dataset(VolumeFolder(tmp_path, shape=(10, 12, 14)))
    assert [(i.index, i.kind) for i in rep.issues] == [(1, "nan")]


def test_image_folder_gives_uint8_hwc_for_albumentations(tmp_path):
    A = pytest.importorskip("albumentations")
    from PIL import Image

    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.full((20, 30), value, np.uint8), mode="L").save(tmp_path / cls / "0.png")
    img, label = nbt.data.image_folder(tmp_path)[1]
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (20, 30, 3) and label == 1
    aug = A.Compose([A.HorizontalFlip(p=1.0), A.Normalize(mean=0.0, std=1.0)])
    ds = nbt.data.image_folder(tmp_path, transform=lambda im: aug(image=im)["image"])
    x, _ = ds[1]
    assert x.shape == (20, 30, 3) and x.dtype == np.float32 and np.allclose(x, 200 / 255)
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder"):
        nbt.data.image_folder(tmp_path / "nowhere")


# --- unlabelled sources, pinned classes, CSV rules (issue 12) and read errors (issue 14)


def test_nifti_class_folders_and_csv_with_names_and_ints_agree(tmp_path):
    for cls, names in (("negative", ("a", "b")), ("positive", ("c",))):
        for i, name in enumerate(names):
            _nii(tmp_path / cls / f"{name}.nii.gz", _vol(seed=10 * len(cls) + i))
    folders = VolumeFolder(tmp_path, shape=(8, 8, 8))
    assert folders.labeled and folders.classes == ["negative", "positive"]
    (tmp_path / "names.csv").write_text(
        "path,label\nnegative/a.nii.gz,negative\npositive/c.nii.gz,positive\nnegative/b.nii.gz,negative\n"
    )
    (tmp_path / "ints.csv").write_text(
        "path,label\nnegative/a.nii.gz,0\npositive/c.nii.gz,1\nnegative/b.nii.gz,0\n"
    )
    by_name = VolumeFolder(tmp_path, shape=(8, 8, 8), csv="names.csv")
    by_int = VolumeFolder(tmp_path / "ints.csv", shape=(8, 8, 8))  # the CSV itself as root
    assert by_name.classes == ["negative", "positive"] and by_int.classes == ["0", "1"]
    assert by_int.root == tmp_path and by_name.labels.tolist() == by_int.labels.tolist() == [0, 1, 0]
    assert by_name.labeled and by_int.labeled
    for ds in (by_name, by_int):
        x, y = ds[1]
        ref = folders[folders.paths.index(ds.paths[1])][0]
        assert y == 1 and torch.equal(x, ref)


def test_flat_folder_and_label_free_csv_read_unlabelled_with_auto(tmp_path):
    _nii(tmp_path / "p1.nii.gz", _vol(seed=1))
    _npy(tmp_path / "p2.npy", _vol(seed=2))
    with pytest.raises(ValueError, match=r"holds 2 volume files directly.*labels='auto'"):
        VolumeFolder(tmp_path, shape=(8, 8, 8))  # training still needs labels
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8), labels="auto")
    assert not ds.labeled and ds.classes == [] and ds.labels.tolist() == [-1, -1]
    assert ds.labels.dtype == np.int64 and [p.name for p in ds.paths] == ["p1.nii.gz", "p2.npy"]
    x, y = ds[0]
    assert x.shape == (1, 8, 8, 8) and y == -1
    assert "unlabelled" in repr(ds)
    (tmp_path / "new.csv").write_text("path\np2.npy\n")
    with pytest.raises(ValueError, match=r"needs a header row with columns path,label; found \['path'\]"):
        VolumeFolder(tmp_path, shape=(8, 8, 8), csv="new.csv")
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8), csv="new.csv", labels="auto", classes=["neg", "pos"])
    assert not ds.labeled and ds.labels.tolist() == [-1] and ds.classes == ["neg", "pos"]


def test_labels_ignore_reads_every_file_of_class_folders_unlabelled(tmp_path):
    _npy(tmp_path / "x" / "a.npy", _vol(seed=1))
    _npy(tmp_path / "y" / "deep" / "b.npy", _vol(seed=2))
    _npy(tmp_path / "y" / ".ipynb_checkpoints" / "b-checkpoint.npy", _vol(seed=3))  # hidden: never read
    assert [p.name for p in VolumeFolder(tmp_path, shape=(8, 8, 8)).paths] == ["a.npy", "b.npy"]
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8), labels="ignore")
    assert (
        not ds.labeled and [p.name for p in ds.paths] == ["a.npy", "b.npy"] and ds.labels.tolist() == [-1, -1]
    )
    with pytest.raises(ValueError, match=r"labels must be one of 'required', 'auto', 'ignore', got 'yes'"):
        VolumeFolder(tmp_path, shape=(8, 8, 8), labels="yes")


def test_pinned_classes_map_a_partial_folder_and_name_an_unknown_class(tmp_path):
    _npy(tmp_path / "val" / "positive" / "a.npy", _vol(seed=1))
    ds = VolumeFolder(tmp_path / "val", shape=(8, 8, 8), classes=["negative", "positive"])
    assert ds.classes == ["negative", "positive"] and ds.labels.tolist() == [1]
    assert VolumeFolder(tmp_path / "val", shape=(8, 8, 8)).labels.tolist() == [0]  # unpinned: its own index
    _npy(tmp_path / "val" / "tumor" / "b.npy", _vol(seed=2))
    with pytest.raises(ValueError, match=r"val/tumor is not among the classes \['negative', 'positive'\]"):
        VolumeFolder(tmp_path / "val", shape=(8, 8, 8), classes=["negative", "positive"])
    (tmp_path / "val" / "l.csv").write_text("path,label\npositive/a.npy,positive\ntumor/b.npy,tumour\n")
    with pytest.raises(ValueError, match=r"row 3: label 'tumour' is not among the classes"):
        VolumeFolder(tmp_path / "val", shape=(8, 8, 8), csv="l.csv", classes=["negative", "positive"])
    (tmp_path / "val" / "i.csv").write_text("path,label\npositive/a.npy,1\ntumor/b.npy,2\n")
    with pytest.raises(ValueError, match=r"row 3: label 2 is not an index of the 2 classes"):
        VolumeFolder(tmp_path / "val", shape=(8, 8, 8), csv="i.csv", classes=["negative", "positive"])
    with pytest.raises(ValueError, match="classes must name each class once"):
        VolumeFolder(tmp_path / "val", shape=(8, 8, 8), classes=["a", "a"])


def test_csv_paths_relative_to_the_csv_folder_and_conflicting_duplicates(tmp_path):
    _npy(tmp_path / "lists" / "vols" / "a.npy", _vol(seed=1))
    _npy(tmp_path / "lists" / "vols" / "b.npy", _vol(seed=2))
    (tmp_path / "lists" / "l.csv").write_text("path,label\nvols/a.npy,0\nvols/b.npy,1\n")
    ds = VolumeFolder(tmp_path, shape=(8, 8, 8), csv=tmp_path / "lists" / "l.csv")
    assert [p.name for p in ds.paths] == ["a.npy", "b.npy"] and ds.root == tmp_path
    (tmp_path / "lists" / "dup.csv").write_text("path,label\nvols/a.npy,0\nvols/b.npy,1\nvols/a.npy,1\n")
    with pytest.raises(ValueError, match=r"row 4: vols/a\.npy is labelled '1' here and '0' in row 2"):
        VolumeFolder(tmp_path / "lists" / "dup.csv", shape=(8, 8, 8))
    (tmp_path / "lists" / "bom.csv").write_bytes(b"\xef\xbb\xbfpath,label\nvols/a.npy,0\n")  # Excel's BOM
    assert VolumeFolder(tmp_path / "lists" / "bom.csv", shape=(8, 8, 8)).labels.tolist() == [0]


@pytest.mark.parametrize("cut", [200, -40])  # inside the header, inside the gzip stream
def test_truncated_nifti_is_named_with_the_fix(tmp_path, cut):
    path = _nii(tmp_path / "a" / "broken.nii.gz", _vol((20, 20, 20), seed=1))
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(
        VolumeReadError, match=r"cannot read .*broken\.nii\.gz .*export it again, or remove it"
    ):
        VolumeFolder(tmp_path, shape=(8, 8, 8))[0]


@pytest.mark.parametrize("cached", [False, True])
def test_a_file_deleted_after_listing_is_named(tmp_path, cached):
    path = _npy(tmp_path / "data" / "a" / "gone.npy", _vol())
    ds = VolumeFolder(tmp_path / "data", shape=(8, 8, 8), cache_dir=tmp_path / "cache" if cached else None)
    path.unlink()
    with pytest.raises(VolumeReadError, match=r"gone\.npy .*(no longer exists|does not exist).*restore it"):
        ds[0]
