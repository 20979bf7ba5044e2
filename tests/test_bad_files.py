"""Bad files, all at once, by name: validate_dataset lists every unreadable or wrong-shaped file of a
folder in one pass, and fit stops on a bad sample with its file name and what to do, before any
checkpoint is written. The files are real: NIfTI written with nibabel, PNG / JPEG with PIL."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.data import ImageFolder, SampleError, VolumeFolder, image_folder
from tests.helpers import NoisyBlobs, tiny_fit

AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])


def _nifti(path, shape, seed=0):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.Nifti1Image(arr, AFFINE).to_filename(str(path))
    return path


def _image(path, size=(24, 24), seed=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _corrupt_gzip(path):
    data = bytearray(path.read_bytes())
    data[40:80] = b"\x00" * 40  # inside the deflate stream
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def volumes(tmp_path):
    root = tmp_path / "volumes"
    good = [
        _nifti(root / c / f"ok_{i}.nii.gz", (12, 12, 10), seed=i) for c in ("neg", "pos") for i in range(3)
    ]
    corrupt = _corrupt_gzip(_nifti(root / "neg" / "corrupt.nii.gz", (12, 12, 10)))
    flat = _nifti(root / "pos" / "flat_slice.nii.gz", (12, 12))  # 2D: not a volume
    return root, good, corrupt, flat


@pytest.fixture
def pages(tmp_path):
    root = tmp_path / "pages"
    good = [_image(root / c / f"ok_{i}.png", seed=i) for c in ("clean", "forged") for i in range(4)]
    cut_png = _truncate(_image(root / "clean" / "x_cut.png", size=(64, 64)))
    cut_jpg = _truncate(_image(root / "forged" / "x_cut.jpg", size=(64, 64)), keep=0.3)
    return root, good, cut_png, cut_jpg  # after the good files in sorted order: not sample 0


def test_a_bad_first_sample_is_refused_before_training_naming_its_file(pages, tmp_path):
    root, _, cut_png, _ = pages
    cut_png.rename(cut_png.with_name("a_cut.png"))  # sample 0 now
    with pytest.raises(SampleError, match=r"training data\[0\] \(.*a_cut\.png\) raised ImageReadError"):
        _fit(ImageFolder(root, size=16), tmp_path)
    assert _no_checkpoint(tmp_path) and not (tmp_path / "run" / "metrics.json").exists()


def test_validate_names_every_bad_volume_in_one_pass(volumes):
    root, good, corrupt, flat = volumes
    rep = nbt.validate_dataset(VolumeFolder(root, shape=(8, 8, 8)))
    assert not rep.ok and rep.n == len(good) + 2
    assert sorted(rep.paths("read")) == sorted([str(corrupt), str(flat)])
    text = str(rep)
    assert "corrupt.nii.gz" in text and "flat_slice.nii.gz" in text and "(12, 12)" in text


def test_validate_names_every_unreadable_image_in_one_pass(pages):
    root, _, cut_png, cut_jpg = pages
    rep = nbt.validate_dataset(ImageFolder(root, size=16))
    assert sorted(rep.paths()) == sorted([str(cut_png), str(cut_jpg)])
    assert all(i.kind == "read" for i in rep.issues)


def test_validate_names_images_of_another_size_through_torchvision_folders(pages, tmp_path):
    root = tmp_path / "sized"
    for i in range(3):
        _image(root / "a" / f"ok_{i}.png", seed=i)
    big = _image(root / "a" / "big.png", size=(30, 24))
    wide = _image(root / "b" / "wide.png", size=(24, 40))
    _image(root / "b" / "ok.png")
    rep = nbt.validate_dataset(
        image_folder(root, transform=lambda img: torch.from_numpy(img).permute(2, 0, 1))
    )
    assert sorted(rep.paths("shape")) == sorted([str(big), str(wide)])


class _Tiny(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        conv = nn.Conv2d if channels == 3 else nn.Conv3d
        pool = nn.AdaptiveAvgPool2d(1) if channels == 3 else nn.AdaptiveAvgPool3d(1)
        self.net = nn.Sequential(
            conv(channels if channels == 3 else 1, 4, 3), pool, nn.Flatten(), nn.Linear(4, 2)
        )

    def forward(self, x):
        return self.net(x)


def _fit(train, tmp_path, channels=3, val=None):
    cfg = nbt.TrainConfig(epochs=1, batch_size=len(train), checkpoint_every_minutes=None)
    model = _Tiny(channels)
    return nbt.fit(
        model,
        train,
        val or train,
        nn.CrossEntropyLoss(),
        cfg,
        tmp_path / "run",
        verbose=False,
        dashboard=None,
    )


def _no_checkpoint(tmp_path):
    return not list((tmp_path / "run").glob("epoch_*.pt")) and not (tmp_path / "run" / "best.pt").exists()


def test_fit_names_a_truncated_png(pages, tmp_path):
    root, _, cut_png, cut_jpg = pages
    cut_jpg.unlink()
    with pytest.raises(SampleError, match="1 sample could not be loaded") as e:
        _fit(ImageFolder(root, size=16), tmp_path)
    assert str(cut_png) in str(e.value) and "validate_dataset" in str(e.value)
    assert _no_checkpoint(tmp_path)


def test_fit_names_every_bad_file_of_the_batch(pages, tmp_path):
    root, _, cut_png, cut_jpg = pages
    with pytest.raises(SampleError, match="2 samples could not be loaded") as e:
        _fit(ImageFolder(root, size=16), tmp_path)  # one batch holds every sample
    assert str(cut_png) in str(e.value) and str(cut_jpg) in str(e.value)


def test_fit_names_an_image_of_another_size_and_points_at_size(tmp_path):
    root = tmp_path / "sized"
    for c in ("a", "b"):
        for i in range(3):
            _image(root / c / f"ok_{i}.png", seed=i)
    odd = _image(root / "b" / "odd.png", size=(32, 20))
    train = image_folder(root, transform=lambda img: torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    with pytest.raises(SampleError, match=r"different input shapes") as e:
        _fit(train, tmp_path)
    message = str(e.value)
    assert str(odd) in message and "(3, 32, 20)" in message and "size=" in message
    assert _no_checkpoint(tmp_path)


def test_fit_names_a_corrupt_nifti_and_a_wrong_shape_volume(volumes, tmp_path):
    root, _, corrupt, flat = volumes
    flat.unlink()
    with pytest.raises(SampleError) as e:
        _fit(VolumeFolder(root, shape=(8, 8, 8)), tmp_path, channels=1)
    assert str(corrupt) in str(e.value) and "export it again" in str(e.value)
    corrupt.unlink()
    _nifti(root / "pos" / "flat_slice.nii.gz", (12, 12))
    with pytest.raises(SampleError) as e:
        _fit(VolumeFolder(root, shape=(8, 8, 8)), tmp_path, channels=1)
    assert str(flat) in str(e.value) and "expected a 3D volume" in str(e.value)
    assert _no_checkpoint(tmp_path)


class _Labelled(Dataset):
    """Files with their labels as a user's own dataset might hold them: listed in `.labels`, or only
    known when a sample is read."""

    def __init__(self, root, labels, listed):
        self.paths = [_image(root / f"img_{i}.png", seed=i) for i in range(len(labels))]
        self._y, self.classes = labels, ["cat", "dog"]
        if listed:
            self.labels = labels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), self._y[i]


@pytest.mark.parametrize("listed", [True, False], ids=["listed-labels", "read-per-batch"])
def test_fit_names_labels_outside_the_classes_before_they_reach_the_loss(tmp_path, listed):
    train = _Labelled(tmp_path / "imgs", [0, 1, 2, 1, 0, -1], listed)
    with pytest.raises(SampleError, match=r"label outside the classes") as e:
        _fit(train, tmp_path, val=_Labelled(tmp_path / "val", [0, 1], listed))
    message = str(e.value)
    assert "img_2.png" in message and "label 2" in message and "['cat', 'dog']" in message
    assert "img_5.png" in message and "label -1" in message
    assert _no_checkpoint(tmp_path)


def test_fit_on_an_unlabelled_folder_says_it_has_no_labels(tmp_path):
    for i in range(4):
        _image(tmp_path / "new" / f"scan_{i}.png", seed=i)
    with pytest.raises(SampleError, match=r"scan_\d\.png.*no label.*nbt\.predict"):
        _fit(ImageFolder(tmp_path / "new", size=16, labels="auto"), tmp_path)


def test_fit_names_a_bad_file_read_by_a_worker(pages, tmp_path):
    root, _, cut_png, cut_jpg = pages
    cut_jpg.unlink()
    cfg = nbt.TrainConfig(epochs=1, batch_size=4, num_workers=1, checkpoint_every_minutes=None)
    ds = ImageFolder(root, size=16)
    with pytest.raises(SampleError) as e:
        nbt.fit(_Tiny(), ds, ds, nn.CrossEntropyLoss(), cfg, tmp_path / "run", verbose=False, dashboard=None)
    assert str(cut_png) in str(e.value)


def test_clean_data_trains_through_the_checks(pages, tmp_path):
    root, _, cut_png, cut_jpg = pages
    cut_png.unlink()
    cut_jpg.unlink()
    run = _fit(ImageFolder(root, size=16), tmp_path)
    assert [h["epoch"] for h in run.history] == [1]


class _RaisesAt(Dataset):
    """In-memory samples (no files) whose __getitem__ fails at one index, as a user's own dataset can."""

    def __init__(self, bad: int, n: int = 24):
        self.base, self.bad = NoisyBlobs(n=n, seed=0), bad

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.bad:
            raise KeyError(f"record {i}")
        return self.base[i]


def test_fit_names_the_index_of_a_sample_that_fails_mid_epoch(tmp_path):
    cfg = nbt.TrainConfig(epochs=1, batch_size=4, lr=1e-3, checkpoint_every_minutes=None)
    with pytest.raises(SampleError, match=r"sample 13\b") as e:  # not sample 0: only training reaches it
        tiny_fit(cfg, tmp_path / "r", train=_RaisesAt(13), val=NoisyBlobs(n=8, seed=1), verbose=True)
    assert "KeyError" in str(e.value) and "record 13" in str(e.value) and "remove that sample" in str(e.value)
    assert not list((tmp_path / "r").glob("epoch_*.pt"))
