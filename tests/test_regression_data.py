"""The user's regression data: a CSV of NIfTI volumes (nibabel) with real-valued targets, bad targets named
by row, column and file, a fingerprint that covers the targets, and the embedded set's known answer."""

from pathlib import Path

import numpy as np
import pytest
import torch

from nbtools.data import (
    AlbumentationsDataset,
    RegressionFolder,
    SyntheticRegressionVolumes,
    compare_fingerprints,
    data_fingerprint,
)
from nbtools.data.targets import read_targets
from nbtools.recipes.regression_data import build_regression_data, regression_holdout
from nbtools.recipes.user_data import describe_data
from tests.user_files import AFFINE


def write_target_csv(root: Path, n: int = 10, columns=("age",), shape=(8, 8, 8), seed: int = 0) -> Path:
    """root/scans/scan_XX.nii.gz and root/targets.csv: path,<columns>; each target a linear function of
    the volume's mean intensity (age = 40 + 10 x mean, then + 1 per column), so a model can learn it."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "scans").mkdir(parents=True, exist_ok=True)
    rows = ["path," + ",".join(columns)]
    for i in range(n):
        level = float(rng.uniform(0, 2))
        vol = (rng.normal(0, 0.2, size=shape) + level).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, AFFINE), root / "scans" / f"scan_{i:02d}.nii.gz")
        rows.append(
            f"scans/scan_{i:02d}.nii.gz,"
            + ",".join(f"{40 + 10 * level + j:.6g}" for j in range(len(columns)))
        )
    (root / "targets.csv").write_text("\n".join(rows) + "\n")
    return root / "targets.csv"


def test_targets_from_a_csv_of_nifti_volumes(tmp_path):
    csv = write_target_csv(tmp_path, n=6, columns=("age", "volume_ml"))
    ds = RegressionFolder.volumes(csv, shape=(8, 8, 8), normalize=None)
    assert ds.target_names == ["age", "volume_ml"] and ds.targets.shape == (6, 2)
    x, y = ds[3]
    assert x.shape == (1, 8, 8, 8) and y.dtype == torch.float32 and y.shape == (2,)
    assert y[1] == pytest.approx(y[0] + 1) and y[0] == pytest.approx(40 + 10 * float(x.mean()), abs=0.5)
    picked = RegressionFolder.volumes(csv, shape=(8, 8, 8), targets=["volume_ml"])
    assert picked[3][1].shape == (1,) and picked[3][1][0] == y[1]
    with pytest.raises(ValueError, match=r"targets=\['weight'\] names column\(s\) \['weight'\]"):
        read_targets(csv, ["weight"])


def test_bad_targets_are_named_by_row_column_and_file(tmp_path):
    csv = write_target_csv(tmp_path, n=5, columns=("age", "score"))
    lines = csv.read_text().splitlines()
    lines[2] = "scans/scan_01.nii.gz,nan,3"
    lines[4] = "scans/scan_03.nii.gz,51,"
    lines[5] = "scans/scan_04.nii.gz,inf,old"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        RegressionFolder.volumes(csv, shape=(8, 8, 8))
    text = str(e.value)
    assert "4 targets that cannot be trained on" in text
    assert "row 3 (scans/scan_01.nii.gz), age: 'nan' is not finite" in text
    assert "row 5 (scans/scan_03.nii.gz), score: empty" in text
    assert "row 6 (scans/scan_04.nii.gz), age: 'inf' is not finite" in text
    assert "row 6 (scans/scan_04.nii.gz), score: 'old' is not a number" in text
    csv.write_text("path,label\nscans/scan_00.nii.gz,3\n")
    with pytest.raises(ValueError, match="has a `label` column: class labels are a classification task"):
        read_targets(csv)


def test_the_fingerprint_covers_the_targets(tmp_path):
    csv = write_target_csv(tmp_path, n=6)
    before = data_fingerprint(RegressionFolder.volumes(csv, shape=(8, 8, 8)))
    assert before["kind"] == "regression" and before["classes"] == ["age"]
    same = compare_fingerprints(before, data_fingerprint(RegressionFolder.volumes(csv, shape=(8, 8, 8))))
    assert same.same
    lines = csv.read_text().splitlines()
    old = lines[3].split(",")[1]
    lines[3] = f"scans/scan_02.nii.gz,{float(old) + 0.5:.6g}"
    csv.write_text("\n".join(lines) + "\n")
    change = compare_fingerprints(before, data_fingerprint(RegressionFolder.volumes(csv, shape=(8, 8, 8))))
    assert not change.same
    assert f"1 target changed (scans/scan_02.nii.gz: age={float(old)!r} -> age={float(old) + 0.5!r})" in str(
        change
    )
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(csv.read_text().replace("path,age", "path,years", 1))
    other = compare_fingerprints(before, data_fingerprint(RegressionFolder.volumes(renamed, shape=(8, 8, 8))))
    assert "target columns ['age'] -> ['years']" in str(other)


def test_the_run_record_of_a_regression_csv(tmp_path):
    csv = write_target_csv(tmp_path, n=10)

    def open_csv(path, names):
        return RegressionFolder.volumes(path, (8, 8, 8), names)

    user = build_regression_data(open_csv, csv, None, None, 0.2, 0)
    record = user.record
    assert record["task"] == "regression" and record["classes"] == ["age"] and record["positive"] is None
    assert record["split"]["n_train"] == 8 and record["split"]["n_val"] == 2
    train_values = user.folder.targets[user.train.indices]
    assert record["targets"]["mean"] == pytest.approx(train_values.mean(0).tolist())
    text = describe_data(record)
    assert "data: " in text and "(10 files)" in text and "targets (training part): age mean" in text
    assert "validation: a 20% hold-out of it (seed 0): 8 train, 2 val" in text
    tr, va = regression_holdout(10, 0.2, 0)
    assert va.tolist() == sorted(user.val.indices) and len(set(tr) | set(va)) == 10
    with pytest.raises(ValueError, match="regression data is a CSV with a header row `path,target`"):
        build_regression_data(open_csv, tmp_path / "scans", None, None, 0.2, 0)
    other = tmp_path / "val.csv"
    other.write_text(csv.read_text().replace("path,age", "path,years", 1))
    with pytest.raises(ValueError, match=r"targets=\['age'\] names column\(s\) \['age'\]"):
        build_regression_data(open_csv, csv, other, None, 0.2, 0)


def test_albumentations_keeps_real_valued_targets():
    class Pages:
        targets = np.array([[1.5], [2.25]])

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.zeros((8, 8, 3), np.uint8), torch.tensor(self.targets[i], dtype=torch.float32)

    wrapped = AlbumentationsDataset(Pages(), None)
    assert wrapped.labels.dtype == np.float64 and wrapped.labels[1, 0] == 2.25
    assert wrapped[1][1].tolist() == [2.25]


def test_synthetic_regression_volumes_have_a_known_answer():
    ds = SyntheticRegressionVolumes(n=24, shape=(16, 16, 16), seed=0, noise=0.0)
    again = SyntheticRegressionVolumes(n=24, shape=(16, 16, 16), seed=0, noise=0.0)
    x, y = ds[5]
    assert x.shape == (1, 16, 16, 16) and y.shape == (1,) and y[0] == pytest.approx(ds.targets[5, 0])
    assert torch.equal(x, again[5][0]) and torch.equal(ds[-1][0], again[23][0])
    # Without noise the blobs are the image: the voxels above the background count their size.
    background = np.array([float(torch.mode(ds[i][0].flatten()).values) for i in range(24)])
    bright = np.array([float((ds[i][0].flatten() > background[i] + 0.5).sum()) for i in range(24)])
    r = np.corrcoef(bright, ds.targets[:, 0])[0, 1]
    assert r**2 > 0.9, r
    two = SyntheticRegressionVolumes(n=4, shape=(16, 16), seed=1, channels=3, heads=True)
    x2, y2 = two[2]
    assert x2.shape == (3, 16, 16) and set(y2) == {"size", "count"} and int(y2["count"]) == two.counts[2]
    with pytest.raises(ValueError, match="shape must be"):
        SyntheticRegressionVolumes(n=4, shape=(4, 4, 4))
