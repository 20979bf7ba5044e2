"""data_fingerprint / compare_fingerprints: a moved folder is the same data; an added, removed, relabelled
or rewritten file is a change, named."""

import json
import shutil

import numpy as np
import pytest

from nbtools.data import DataChange, ImageFolder, VolumeFolder, compare_fingerprints, data_fingerprint

nib = pytest.importorskip("nibabel")
AFFINE = np.array([[1.5, 0, 0, -90.0], [0, 1.5, 0, -120.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
SHAPE = (8, 8, 8)


def _nii(path, seed=0, shape=(6, 7, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.Nifti1Image(arr, AFFINE).to_filename(str(path))
    return path


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "drive" / "volumes"
    _nii(root / "negative" / "a.nii.gz", 1)
    _nii(root / "negative" / "c.nii.gz", 2)
    _nii(root / "negative" / "d.nii.gz", 4)
    _nii(root / "positive" / "b.nii.gz", 3)
    return root


def _fp(root, **kw):
    return json.loads(json.dumps(data_fingerprint(VolumeFolder(root, shape=SHAPE, **kw))))  # as recorded


def test_fingerprint_is_plain_json_with_relative_sorted_files(data):
    fp = _fp(data)
    assert fp["root"] == str(data) and fp["root_resolved"] == str(data.resolve()) and fp["n_files"] == 4
    assert fp["classes"] == ["negative", "positive"] and fp["labeled"] is True
    names = [f[0] for f in fp["files"]]
    assert names == ["negative/a.nii.gz", "negative/c.nii.gz", "negative/d.nii.gz", "positive/b.nii.gz"]
    assert fp["files"][3][1] == (data / "positive" / "b.nii.gz").stat().st_size
    assert fp["files"][3][2] == "positive" and len(fp["sha256"]) == 64
    same = compare_fingerprints(fp, _fp(data))
    assert same.same and not same.moved and str(same) == "same data"


def test_moved_folder_is_the_same_data(data, tmp_path):
    before = _fp(data)
    shutil.move(data, tmp_path / "mounted_elsewhere")
    after = _fp(tmp_path / "mounted_elsewhere")
    assert after["sha256"] == before["sha256"]
    change = compare_fingerprints(before, after)
    assert change.same and change.moved
    assert "same data" in str(change) and "mounted_elsewhere" in str(change)


def test_added_removed_relabelled_and_resized_files_are_named(data):
    before = _fp(data)
    _nii(data / "positive" / "new_case.nii.gz", 5)
    (data / "negative" / "a.nii.gz").unlink()
    shutil.move(data / "negative" / "c.nii.gz", data / "positive" / "c.nii.gz")  # relabelled
    _nii(data / "positive" / "b.nii.gz", 6, shape=(12, 12, 12))  # rewritten, bigger
    change = compare_fingerprints(before, _fp(data))
    assert not change.same and not change.moved
    assert change.added == ("positive/new_case.nii.gz",) and change.removed == ("negative/a.nii.gz",)
    assert change.relabelled == (("c.nii.gz", "negative", "positive"),)
    assert [p for p, _, _ in change.resized] == ["positive/b.nii.gz"]
    text = str(change)
    assert "1 file added (positive/new_case.nii.gz)" in text and "1 removed (negative/a.nii.gz)" in text
    assert (
        "1 relabelled (c.nii.gz: negative -> positive)" in text and "1 resized (positive/b.nii.gz: " in text
    )


def test_a_csv_relabel_and_new_classes(data):
    (data / "l.csv").write_text("path,label\nnegative/a.nii.gz,negative\npositive/b.nii.gz,positive\n")
    before = _fp(data, csv="l.csv")
    (data / "l.csv").write_text("path,label\nnegative/a.nii.gz,positive\npositive/b.nii.gz,positive\n")
    change = compare_fingerprints(before, _fp(data, csv="l.csv", classes=["negative", "positive"]))
    assert (
        change.relabelled == (("negative/a.nii.gz", "negative", "positive"),) and not change.classes_changed
    )
    assert "1 relabelled (negative/a.nii.gz: negative -> positive)" in str(change)
    _nii(data / "tumour" / "d.nii.gz", 6)
    change = compare_fingerprints(_fp(data), _fp(data / ".." / "volumes"))
    assert change.same  # the same folder, spelled another way
    change = compare_fingerprints(before, _fp(data))
    assert change.classes_changed == (("negative", "positive"), ("negative", "positive", "tumour"))
    assert "classes ['negative', 'positive'] -> ['negative', 'positive', 'tumour']" in str(change)


def test_many_changes_are_counted_and_a_few_named(tmp_path):
    from PIL import Image

    for i in range(2):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "a" / f"{i}.png")
    before = data_fingerprint(ImageFolder(tmp_path, size=8))
    for i in range(2, 10):
        Image.new("RGB", (8, 8)).save(tmp_path / "a" / f"{i}.png")
    change = compare_fingerprints(before, data_fingerprint(ImageFolder(tmp_path, size=8)))
    assert (
        len(change.added) == 8 and "8 files added (a/2.png, " in str(change) and "... 3 more" in str(change)
    )


def test_bad_inputs_are_named(data):
    fp = _fp(data)
    with pytest.raises(ValueError, match=r"recorded fingerprint is not a data_fingerprint\(\) dict"):
        compare_fingerprints({"files": []}, fp)
    with pytest.raises(TypeError, match=r"list has no \.root"):
        data_fingerprint([1, 2])
    assert isinstance(compare_fingerprints(fp, fp), DataChange)
