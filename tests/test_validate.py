"""validate_dataset names every planted problem by index and kind, on every kind of input."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, get_worker_info

import nbtools as nbt

PLANTED = {3: "nan", 7: "inf", 11: "extreme", 15: "shape", 19: "dtype", 23: "label"}


def _volumes(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, 8, generator=g)
    x[3, 0, 1, 2, 3] = math.nan
    x[7, 0, 0, 0, 0] = -math.inf
    x[11, 0, 4, 4, 4] = 50.0
    return x, torch.arange(n) % 2


class Planted(Dataset):
    """One problem of each kind at the indices in PLANTED; `copy` makes samples fresh tensors (no
    shared storage), which takes the stacking path instead of the zero-copy one."""

    def __init__(self, copy=False):
        self.x, self.y = _volumes()
        self.copy = copy

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x, y = self.x[i], int(self.y[i])
        if i == 15:
            x = torch.zeros(1, 8, 8, 6)
        if i == 19:
            x = x.double()
        if i == 23:
            y = 2
        return (x.clone() if self.copy else x), y


def _found(rep):
    return {(i.index, i.kind) for i in rep.issues}


@pytest.mark.parametrize("copy", [False, True])
def test_dataset_reports_exactly_the_planted_indices_and_kinds(copy):
    rep = nbt.validate_dataset(Planted(copy), num_classes=2)
    assert _found(rep) == set(PLANTED.items())
    assert not rep.ok and rep.n == 32
    assert rep.indices("nan") == [3] and rep.indices() == sorted(PLANTED)


class MarksItsReader(Dataset):
    """Samples read in the main process carry a NaN; samples read in a worker process do not."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        x = torch.zeros(1, 4, 4, 4)
        if get_worker_info() is None:
            x[0, 0, 0, 0] = math.nan
        return x, 0


def test_num_workers_reads_in_worker_processes():
    assert nbt.validate_dataset(MarksItsReader(), num_workers=2).ok
    assert nbt.validate_dataset(MarksItsReader()).indices("nan") == list(range(6))
    assert _found(nbt.validate_dataset(Planted(), num_classes=2, num_workers=2)) == set(PLANTED.items())


def test_tensor_and_pair_report_planted_values_and_labels():
    x, y = _volumes()
    y[23] = 2
    want = {(3, "nan"), (7, "inf"), (11, "extreme")}
    assert _found(nbt.validate_dataset(x)) == want
    assert _found(nbt.validate_dataset((x, y), num_classes=2)) == want | {(23, "label")}
    assert _found(nbt.validate_dataset((x.numpy(), y.numpy()), num_classes=2)) == want | {(23, "label")}
    # without num_classes a label of 2 is fine, and a negative or fractional one is not
    y2 = y.float()
    y2[5], y2[6] = -1, 0.5
    assert {(i, k) for i, k in _found(nbt.validate_dataset((x, y2))) if k == "label"} == {
        (5, "label"),
        (6, "label"),
    }


def test_tensor_expected_shape_and_integer_dtype():
    rep = nbt.validate_dataset(torch.zeros(4, 1, 8, 8, 8), expected_shape=(1, 8, 8, 9))
    assert _found(rep) == {(i, "shape") for i in range(4)}
    assert _found(nbt.validate_dataset(torch.zeros(4, 1, 8, 8, 8, dtype=torch.uint8))) == {
        (i, "dtype") for i in range(4)
    }


def test_max_abs_none_turns_the_extreme_check_off():
    x, _ = _volumes()
    assert _found(nbt.validate_dataset(x, max_abs=None)) == {(3, "nan"), (7, "inf")}


@pytest.mark.parametrize("shuffle", [False, True])
def test_dataloader_names_dataset_indices_and_never_collates_mixed_shapes(shuffle):
    loader = DataLoader(Planted(), batch_size=4, shuffle=shuffle)
    with pytest.raises(RuntimeError):  # what seed 004's loop would hit: sample 15 breaks the stack
        list(loader)
    assert _found(nbt.validate_dataset(loader, num_classes=2)) == set(PLANTED.items())


def test_iterable_loader_names_batch_and_item():
    class Stream(IterableDataset):
        def __iter__(self):
            x, y = _volumes(n=12)
            return iter(zip(x, y))

    rep = nbt.validate_dataset(DataLoader(Stream(), batch_size=4))
    assert _found(rep) == {
        ("batch 0 item 3", "nan"),
        ("batch 1 item 3", "inf"),
        ("batch 2 item 3", "extreme"),
    }


def test_clean_synthetic_dataset_is_ok_with_label_counts():
    ds = nbt.data.SyntheticVolumes(n=12, shape=(16, 16, 16), seed=0)
    rep = nbt.validate_dataset(ds, num_classes=2, expected_shape=(1, 16, 16, 16))
    assert rep.ok, str(rep)
    assert rep.stats["mean"][0] == pytest.approx(0.0, abs=1e-6)
    assert rep.stats["std"][0] == pytest.approx(1.0, abs=1e-5)  # each volume is z-scored
    counts = np.bincount(ds.labels, minlength=2)
    assert rep.stats["label_counts"] == {0: counts[0], 1: counts[1]}
    assert rep.stats["imbalance"] == pytest.approx(counts.max() / counts.min())
    assert "no issues: OK" in str(rep)


def test_stats_match_numpy_over_finite_values():
    # 3 channels with a large offset against a small spread (the case where E[x^2] - E[x]^2 loses
    # digits), and a NaN and an Inf that must be left out.
    rng = np.random.default_rng(1)
    x = (
        rng.standard_normal((20, 3, 4, 8, 8)) * np.array([0.5, 2.0, 1e-3])[:, None, None, None]
        + np.array([100, -3, 7])[:, None, None, None]
    ).astype(np.float32)
    x[2, 1, 0, 0, 0] = np.nan
    x[5, 2, 1, 1, 1] = np.inf
    rep = nbt.validate_dataset(x, max_abs=None)
    assert _found(rep) == {(2, "nan"), (5, "inf")}
    for c in range(3):
        v = x[:, c].astype(np.float64)
        v = v[np.isfinite(v)]
        assert rep.stats["mean"][c] == pytest.approx(v.mean(), rel=1e-6)
        assert rep.stats["std"][c] == pytest.approx(v.std(), rel=1e-4)
        assert rep.stats["min"][c] == v.min() and rep.stats["max"][c] == v.max()
        assert rep.stats["count"][c] == v.size


def test_mask_labels_are_checked_value_by_value():
    x = torch.zeros(6, 1, 4, 4, 4)
    masks = torch.zeros(6, 4, 4, 4, dtype=torch.long)
    masks[2, 0, 0, 0] = 3
    masks[4, 1, 1, 1] = -1
    rep = nbt.validate_dataset((x, masks), num_classes=2)
    assert _found(rep) == {(2, "label"), (4, "label")}
    assert rep.stats["label_counts"] is None


def test_report_text_html_and_progress(capsys):
    x = torch.randn(30, 1, 4, 4, 4)
    x[:, 0, 0, 0, 0] = math.nan
    rep = nbt.validate_dataset(x, progress=True)
    assert "validate" in capsys.readouterr().err  # the tqdm bar
    text = str(rep)
    assert "30 with issues (nan 30): NOT OK" in text and "index 0: nan: 1 NaN of 64 values" in text
    assert "... and 20 more" in text
    assert "<table>" in rep._repr_html_() and "index" in rep._repr_html_()


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="same length"):
        nbt.validate_dataset((torch.zeros(4, 2), torch.zeros(3)))
    with pytest.raises(ValueError, match="2 items"):
        nbt.validate_dataset((torch.zeros(4, 2), torch.zeros(4), torch.zeros(4)))
    with pytest.raises(ValueError, match="num_classes must be"):
        nbt.validate_dataset(torch.zeros(4, 2), num_classes=0)
    with pytest.raises(TypeError, match="got int"):
        nbt.validate_dataset(3)


def test_read_only_memmap_arrays(tmp_path):
    x, _ = _volumes()
    np.save(tmp_path / "x.npy", x.numpy())
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")  # read-only: torch would warn, nothing may break
    assert _found(nbt.validate_dataset(mm)) == {(3, "nan"), (7, "inf"), (11, "extreme")}
    assert _found(nbt.validate_dataset(list(mm))) == {(3, "nan"), (7, "inf"), (11, "extreme")}


# --- folder datasets: every unreadable file in one pass, issues that name files (issue 14)


def _nii(path, arr):
    nib = pytest.importorskip("nibabel")
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-90.0, -120.0, 40.0)
    nib.Nifti1Image(arr, affine).to_filename(str(path))
    return path


def test_folder_with_two_unreadable_and_one_wrong_shaped_file_reports_all_three(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        _nii(tmp_path / ("negative" if i % 2 else "positive") / f"ok{i}.nii.gz", rng.normal(size=(8, 8, 8)))
    cut = _nii(tmp_path / "negative" / "cut.nii.gz", rng.normal(size=(8, 8, 8)))
    cut.write_bytes(cut.read_bytes()[:-30])
    (tmp_path / "positive" / "empty.nii.gz").write_bytes(b"")
    np.save(tmp_path / "positive" / "slice.npy", rng.normal(size=(8, 8)))  # 2D: not a volume
    ds = nbt.data.VolumeFolder(tmp_path, shape=(8, 8, 8))
    rep = nbt.validate_dataset(ds)
    bad = {ds.paths[i].name for i in rep.indices("read")}
    assert bad == {"cut.nii.gz", "empty.nii.gz", "slice.npy"} and rep.n == 7
    assert sorted(rep.paths()) == sorted(str(p) for p in ds.paths if p.name in bad)
    text = str(rep)
    assert "3 with issues (read 3)" in text
    for name in ("cut.nii.gz", "empty.nii.gz", "slice.npy"):
        assert f"/{name}): read: reading it raised VolumeReadError: " in text, name
    assert "holds an array of shape (8, 8); expected a 3D volume" in text
    assert _found(nbt.validate_dataset(ds, num_workers=2)) == _found(rep)  # from worker processes too


class Files(Dataset):
    """Samples with a `.paths`: index 1 raises, index 2 has the wrong shape, index 3 a string label."""

    def __init__(self):
        self.paths = [f"data/{i}.png" for i in range(5)]
        self.classes = ["a", "b"]

    def __len__(self):
        return 5

    def __getitem__(self, i):
        if i == 1:
            raise ValueError("broken PNG chunk")
        x = torch.zeros(3, 4, 5) if i == 2 else torch.zeros(3, 4, 4)
        return x, {3: "cat", 4: 2}.get(i, 0)


def test_issues_name_files_through_subsets_and_wrappers():
    rep = nbt.validate_dataset(Files())  # num_classes from .classes: label 2 is out of range
    assert {(i.index, i.kind, i.path) for i in rep.issues} == {
        (1, "read", "data/1.png"),
        (2, "shape", "data/2.png"),
        (3, "label", "data/3.png"),
        (4, "label", "data/4.png"),
    }
    assert "index 1 (data/1.png): read: reading it raised ValueError: broken PNG chunk" in str(rep)
    sub = nbt.validate_dataset(Subset(Files(), [4, 2, 0]))
    assert {(i.index, i.kind, i.path) for i in sub.issues} == {
        (0, "label", "data/4.png"),
        (1, "shape", "data/2.png"),
    }
    wrapped = nbt.validate_dataset(DataLoader(Files(), batch_size=2))
    assert {i.path for i in wrapped.issues} == {f"data/{i}.png" for i in range(1, 5)}


def test_empty_dataset_is_not_ok():
    for empty in ([], torch.zeros(0, 1, 4, 4, 4)):
        rep = nbt.validate_dataset(empty)
        assert not rep.ok and [i.kind for i in rep.issues] == ["empty"] and rep.indices() == []
        assert "the dataset is empty: NOT OK" in str(rep) and "dataset: empty: no samples" in str(rep)


def test_bad_labels_are_reported_per_index():
    x = torch.zeros(5, 1, 2, 2, 2)
    rep = nbt.validate_dataset((x, ["0", 1, 0.5, -1, 3]), num_classes=2)
    assert {(i.index, i.kind) for i in rep.issues} == {(i, "label") for i in (0, 2, 3, 4)}
    text = str(rep)
    assert "label '0' (a str) is not a number" in text and "label 0.5 is not a whole number" in text
    assert "label -1 is negative" in text and "label 3 is not in [0, 2)" in text


def test_unlabelled_folder_placeholders_are_not_label_issues(tmp_path):
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.random.default_rng(i).normal(size=(4, 4, 4)).astype(np.float32))
    ds = nbt.data.VolumeFolder(tmp_path, shape=(4, 4, 4), labels="auto")
    assert ds[0][1] == -1 and nbt.validate_dataset(ds).ok
