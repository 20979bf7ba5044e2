"""ImageFolder: PNG/JPEG from class folders, CSVs and flat folders, decoded to RGB, resized the way
document_augmentation resizes, normalised as AlbumentationsDataset does; bad files named."""

import numpy as np
import pytest
import torch
from PIL import Image

import nbtools as nbt
from nbtools.data import AlbumentationsDataset, ImageFolder, ImageReadError, document_augmentation
from nbtools.data.augment2d import to_tensor
from nbtools.data.images import read_rgb


def _page(shape=(40, 56, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path, **kw)
    return path


@pytest.fixture
def pages(tmp_path):
    """genuine/: a PNG and a JPEG (in a subfolder); forged/: a PNG."""
    _save(tmp_path / "genuine" / "a.png", _page(seed=1))
    _save(tmp_path / "genuine" / "scans" / "b.jpg", _page((30, 20, 3), seed=2), quality=90)
    _save(tmp_path / "forged" / "c.png", _page((64, 64, 3), seed=3))
    return tmp_path


def test_class_folders_of_png_and_jpeg(pages):
    ds = ImageFolder(pages, size=32)
    assert ds.labeled and ds.classes == ["forged", "genuine"] and ds.root == pages
    assert [p.name for p in ds.paths] == ["c.png", "a.png", "b.jpg"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.labels.dtype == np.int64
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == ds.labels[i]
    raw = ImageFolder(pages, size=32, raw=True)
    img, _ = raw[2]  # 30 x 20: upscaled; the others are downscaled
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3) and img.flags.writeable
    assert nbt.validate_dataset(ds, max_abs=None).ok


def test_same_pixels_as_the_albumentations_path(pages):
    """ImageFolder(raw=False) == AlbumentationsDataset(image_folder(root), document_augmentation(size=...))."""
    ds = ImageFolder(pages, size=24)
    ref = AlbumentationsDataset(nbt.data.image_folder(pages), document_augmentation(train=False, size=24))
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i][0], ref[i][0], rtol=0, atol=0)
    raw = ImageFolder(pages, size=24, raw=True)
    torch.testing.assert_close(to_tensor(raw[0][0]), ds[0][0], rtol=0, atol=0)
    # INTER_AREA averages when shrinking: 1-px strokes every 4 px keep a quarter of their ink at 1/4
    # size, where bilinear sampling (between pixels 1 and 2 of each 4) would drop them all
    strokes = np.zeros((32, 32, 3), np.uint8)
    strokes[:, ::4] = 255
    _save(pages / "flat" / "strokes.png", strokes)
    small = ImageFolder(pages / "flat", size=8, raw=True, labels="auto")[0][0]
    assert np.abs(small.astype(int) - 64).max() <= 1


def test_grey_palette_alpha_and_16_bit_become_rgb(tmp_path):
    _save(tmp_path / "grey.png", np.full((8, 8), 77, np.uint8), mode="L")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    _save(tmp_path / "alpha.png", rgba)
    Image.fromarray(np.full((8, 8), 120, np.uint8), mode="L").convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert (read_rgb(tmp_path / "grey.png") == 77).all()
    alpha = read_rgb(tmp_path / "alpha.png")
    assert alpha.shape == (8, 8, 3) and (alpha[:4] == [200, 0, 0]).all() and (alpha[4:] == 255).all()
    assert read_rgb(tmp_path / "palette.png").shape == (8, 8, 3)
    assert (read_rgb(tmp_path / "deep.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    _save(tmp_path / "photo.jpg", _page((20, 30, 3)), exif=exif)
    assert read_rgb(tmp_path / "photo.jpg").shape == (30, 20, 3)


def test_flat_folder_and_csvs(pages):
    flat = pages / "new"
    _save(flat / "x.png", _page(seed=4))
    _save(flat / "y.jpeg", _page(seed=5))
    with pytest.raises(ValueError, match=r"has no class subfolders \(it holds 2 image files directly"):
        ImageFolder(flat, size=16)
    ds = ImageFolder(flat, size=16, labels="auto", raw=True)
    assert not ds.labeled and ds.classes == [] and ds.labels.tolist() == [-1, -1]
    assert ds[1][0].shape == (16, 16, 3) and ds[1][1] == -1
    (pages / "names.csv").write_text("path,label\ngenuine/a.png,genuine\nforged/c.png,forged\n")
    (pages / "ints.csv").write_text("path,label\ngenuine/a.png,1\nforged/c.png,0\n")
    (pages / "bare.csv").write_text("path\ngenuine/a.png\nnew/x.png\n")
    by_name = ImageFolder(pages / "names.csv", size=16, classes=["forged", "genuine"])
    by_int = ImageFolder(pages, size=16, csv="ints.csv", classes=["forged", "genuine"])
    assert by_name.labels.tolist() == by_int.labels.tolist() == [1, 0]
    assert torch.equal(by_name[0][0], by_int[0][0])
    bare = ImageFolder(pages / "bare.csv", size=16, labels="auto")
    assert not bare.labeled and [p.name for p in bare.paths] == ["a.png", "x.png"]
    (pages / "bad.csv").write_text("path,label\ngenuine/a.png,genuine\nnotes.txt,forged\n")
    with pytest.raises(ValueError, match=r"row 3: notes\.txt is not a \.png/\.jpg/\.jpeg file"):
        ImageFolder(pages / "bad.csv", size=16)


def test_truncated_png_is_named_with_the_fix(pages):
    path = pages / "forged" / "c.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    ds = ImageFolder(pages, size=16)
    with pytest.raises(ImageReadError, match=r"cannot read .*c\.png .*export it again, or remove it") as e:
        ds[0]
    assert isinstance(e.value, OSError)
    rep = nbt.validate_dataset(ImageFolder(pages, size=16, raw=False), max_abs=None)
    assert rep.paths("read") == [str(path)] and "c.png): read: reading it raised ImageReadError" in str(rep)
    (pages / "forged" / "d.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"d\.png \(UnidentifiedImageError"):
        ImageFolder(pages, size=16)[1]


def test_bad_size_and_classes_are_named(pages):
    with pytest.raises(ValueError, match=r"size must be an int >= 1 .*got 0"):
        ImageFolder(pages, size=0)
    with pytest.raises(ValueError, match=r"forged is not among the classes \['genuine', 'other'\]"):
        ImageFolder(pages, size=16, classes=["genuine", "other"])
