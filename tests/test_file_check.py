"""Every file of the user's data is read before training (nbt.data.check_files through make_job /
load_job / Job.fit): bad files are named all at once, nothing reaches the run folder, and files that
passed are not read again unless they changed. The files are real: NIfTI written with nibabel, PNG
with PIL, then damaged the way copies and exports damage them."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbtools as nbt
from nbtools import recipes
from nbtools.data import BadFilesError, SampleError, VolumeFolder, check_files
from nbtools.data import volumes as volumes_module
from tests.user_files import write_nifti_folder, write_png_folder

ARGS = dict(shape=(16, 16, 16), smoke=True, batch_size=4, epochs=1, checkpoint_every_minutes=None)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A fresh per-machine record for each test (a machine that never checked these files)."""
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path / "machine-cache"))


@pytest.fixture
def opened(monkeypatch):
    """Counts the volume files decoded (read_volume is what every VolumeFolder read goes through)."""
    paths = []
    read = volumes_module.read_volume

    def counting(path, key=None):
        paths.append(str(path))
        return read(path, key)

    monkeypatch.setattr(volumes_module, "read_volume", counting)
    return paths


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _vols(tmp_path, n=None):
    return write_nifti_folder(tmp_path / "vols", n or {"benign": 8, "malignant": 6})


def test_make_job_names_every_bad_file_in_one_message_and_writes_no_run_folder(tmp_path):
    vols = _vols(tmp_path)
    truncated = _cut(vols / "benign" / "case_003.nii.gz")
    flat = vols / "malignant" / "case_102.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((10, 10), np.float32), np.eye(4)), flat)  # a slice, not a volume
    with pytest.raises(BadFilesError) as e:
        recipes.make_job("resnet3d", data=str(vols), **ARGS)
    text = str(e.value)
    assert isinstance(e.value, (ValueError, SampleError))  # what a CLI catches to exit 2
    assert text.startswith("2 of 14 files cannot be trained on")
    assert f"{truncated}: truncated: the data ends early" in text
    assert f"{flat}: holds an array of shape (10, 10); expected a 3D volume" in text
    assert "export them again from the source" in text and "remove them from the folder" in text
    assert sorted(p for p, _ in e.value.problems) == sorted([str(truncated), str(flat)])
    assert not (tmp_path / "run").exists()


def test_a_recipe_called_directly_reads_its_files_in_fit_before_the_run_folder(tmp_path):
    vols = _vols(tmp_path)
    _cut(vols / "malignant" / "case_101.nii.gz", keep=0.97)  # only the gzip trailer and a little data lost
    job = recipes.resnet3d_job(data=str(vols), **ARGS)
    with pytest.raises(BadFilesError, match=r"case_101\.nii\.gz: truncated"):
        job.fit(tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_a_damaged_gzip_of_the_right_length_is_found(tmp_path):
    """nib.load stops at the last voxel and decodes a damaged deflate stream to garbage; the CRC sees it."""
    vols = _vols(tmp_path)
    path = vols / "benign" / "case_001.nii.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(BadFilesError, match=r"case_001\.nii\.gz: damaged: its gzip data does not decompress"):
        recipes.make_job("resnet3d", data=str(vols), **ARGS)


def test_focal2d_names_a_non_image_png_and_a_truncated_one(tmp_path):
    pages = write_png_folder(tmp_path / "pages", size=64)
    text_png = pages / "forged" / "notes.png"
    text_png.write_text("meeting notes, not an image")
    cut = _cut(pages / "authentic" / "page_003.png", keep=0.4)
    with pytest.raises(BadFilesError) as e:
        recipes.make_job("focal2d", data=str(pages), size=32, smoke=True, epochs=1)
    text = str(e.value)
    assert text.startswith("2 of 17 files cannot be trained on")
    assert f"{text_png}: not an image PIL can decode" in text
    assert f"{cut}: " in text


def test_nan_voxels_are_named_with_their_count(tmp_path):
    import nibabel as nib

    vols = _vols(tmp_path)
    vol = np.random.default_rng(0).normal(100.0, 20.0, (10, 10, 10)).astype(np.float32)
    vol[5, 5, 5], vol[4, 4, 4] = np.nan, np.inf  # inside the 16^3 the volume is padded to
    nib.save(nib.Nifti1Image(vol, np.eye(4)), vols / "benign" / "case_002.nii.gz")
    with pytest.raises(
        BadFilesError, match=r"(?s)case_002\.nii\.gz: 1 NaN and 1 Inf of 4096 values .*replace them"
    ):
        recipes.make_job("resnet3d", data=str(vols), **ARGS)


def test_a_rerun_on_the_same_files_reads_none_and_a_changed_file_is_read_again(tmp_path, opened, capsys):
    vols = _vols(tmp_path)
    job = recipes.make_job("resnet3d", data=str(vols), **ARGS)
    assert (job.file_check.n_files, job.file_check.n_read) == (14, 14)
    assert len(opened) == 14 and "files: read 14 of 14 before training" in capsys.readouterr().out
    opened.clear()
    job = recipes.make_job("resnet3d", data=str(vols), **ARGS)
    assert job.file_check.n_read == 0 and opened == []
    assert "files: all 14 passed the file check before, unchanged: not read again" in capsys.readouterr().out

    changed = vols / "benign" / "case_004.nii.gz"
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-exported: the same size, a new mtime
    job = recipes.make_job("resnet3d", data=str(vols), **ARGS)
    assert job.file_check.n_read == 1 and opened == [str(changed)]


def test_a_file_damaged_at_the_same_size_with_its_mtime_set_back_is_read_again(tmp_path):
    """size and mtime cannot see it; the per-machine record also keeps the change time, which no tool
    sets back."""
    vols = _vols(tmp_path)
    ds = VolumeFolder(vols, shape=(16, 16, 16))
    assert check_files([ds], progress=False).n_read == 14
    path = vols / "malignant" / "case_100.nii.gz"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-12:-8] = bytes(4)  # inside the last deflate block: same size
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r / cp -p: the old mtime back
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(BadFilesError, match=r"(?s)1 of 14 files .*case_100\.nii\.gz: (damaged|truncated)"):
        check_files([ds], progress=False)


def test_after_a_fix_only_the_fixed_files_are_read(tmp_path, opened):
    vols = _vols(tmp_path)
    bad = _cut(vols / "benign" / "case_005.nii.gz")
    with pytest.raises(BadFilesError):
        recipes.make_job("resnet3d", data=str(vols), **ARGS)
    bad.unlink()  # the user removes it
    opened.clear()
    job = recipes.make_job("resnet3d", data=str(vols), **ARGS)
    assert job.file_check.n_files == 13 and opened == []  # every other file passed before, unchanged


def test_a_resume_on_a_fresh_machine_trusts_the_runs_check_until_a_file_changes(
    tmp_path, monkeypatch, opened
):
    vols = _vols(tmp_path)
    job = recipes.make_job("resnet3d", data=str(vols), **ARGS)
    job.fit(tmp_path / "run", verbose=False)
    record = nbt.runs.Run.load(tmp_path / "run").meta["data"]["file_check"]
    assert record == {"key": job.file_check.key, "n_files": 14}

    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path / "new-vm"))  # Colab recycled the VM: no record
    opened.clear()
    again = recipes.load_job(tmp_path / "run", epochs=2)
    assert again.file_check.known and again.file_check.n_read == 0 and opened == []
    assert again.meta["data"]["file_check"] == record  # what the resumed run keeps

    path = vols / "malignant" / "case_103.nii.gz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path / "machine-cache"))  # back where make_job ran
    opened.clear()  # fit read the files to train
    again = recipes.load_job(tmp_path / "run", epochs=3)  # the same sizes: the data check passes
    assert not again.file_check.known and opened == [str(path)]  # the 13 others passed on this machine


def test_the_cli_names_both_bad_files_exits_non_zero_and_leaves_no_run_folder(tmp_path):
    import nibabel as nib

    vols = write_nifti_folder(tmp_path / "vols")
    val = write_nifti_folder(tmp_path / "val", {"benign": 2, "malignant": 2}, seed=1)
    truncated = _cut(vols / "benign" / "case_006.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((10, 10), np.float32), np.eye(4)), val / "benign" / "case_001.nii.gz")
    root = Path(__file__).resolve().parents[1]
    data = ["--data", "vols", "--val", "val", "--shape", "16", "16", "16"]
    r = subprocess.run(
        [sys.executable, "-m", "nbtools", "train", "resnet3d", *data, "--smoke", "--run-dir", "runs/mine"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "2"},
    )
    assert r.returncode != 0
    assert "2 of 18 files cannot be trained on" in r.stderr
    assert "vols/benign/case_006.nii.gz: truncated" in r.stderr
    assert "val/benign/case_001.nii.gz: holds an array of shape (10, 10)" in r.stderr
    assert not (tmp_path / "runs" / "mine").exists() or not any((tmp_path / "runs" / "mine").iterdir())
    assert truncated.exists()  # nothing of the user's is touched


@pytest.mark.parametrize("kind", ["float32", "int16_scaled", "big_endian", "nifti2", "4d_channel"])
def test_a_gzipped_nifti_reads_exactly_as_nib_load_reads_it(tmp_path, kind):
    """read_volume decompresses a .nii.gz whole (so gzip checks its CRC) before nibabel decodes it: the
    array must be nib.load's, bit for bit, whatever the header says."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    arr = rng.normal(50, 10, (7, 8, 9)).astype(np.float32)
    if kind == "int16_scaled":
        img = nib.Nifti1Image(arr.astype(np.int16), np.eye(4))
        img.header.set_slope_inter(0.37, -12.5)
    elif kind == "big_endian":
        img = nib.Nifti1Image(arr.astype(">f4"), np.eye(4), nib.Nifti1Header(endianness=">"))
    elif kind == "nifti2":
        img = nib.Nifti2Image(arr.astype(np.float64), np.eye(4))
    elif kind == "4d_channel":
        img = nib.Nifti1Image(arr[..., None], np.eye(4))
    else:
        img = nib.Nifti1Image(arr, np.eye(4))
    path = tmp_path / "v.nii.gz"
    nib.save(img, path)
    expected = np.asarray(nib.load(path).get_fdata(dtype=np.float32)).reshape(7, 8, 9)
    got = volumes_module.read_volume(path)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()


class _Listed:
    """A folder dataset in the shape check_files reads (`.root`, `.paths`, items (x, y)), whose reads are
    counted and can stop like the stop button."""

    def __init__(self, root, paths, stop_at=None):
        self.root, self.paths, self.stop_at, self.reads = root, paths, stop_at, 0

    def __getitem__(self, i):
        self.reads += 1
        if i == self.stop_at:
            raise KeyboardInterrupt
        time.sleep(0.005)  # a read takes time
        return np.zeros(4, np.float32), 0


def _files(tmp_path, n, size):
    paths = []
    for i in range(n):
        path = tmp_path / "files" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: the size without the bytes
        paths.append(path)
    return paths


def test_big_files_get_fewer_threads_so_their_decoded_copies_fit_in_memory(tmp_path):
    small = _Listed(tmp_path, _files(tmp_path / "s", 4, 1 << 20))
    assert check_files([small], progress=False).workers == 8
    big = _Listed(tmp_path, _files(tmp_path / "b", 4, 100 << 20))  # a 512^3 CT is bigger
    assert check_files([big], progress=False).workers == 1
    assert check_files([big], workers=3, progress=False).workers == 3  # asked for


def test_the_stop_button_stops_the_check_without_reading_the_rest(tmp_path):
    ds = _Listed(tmp_path, _files(tmp_path, 200, 10), stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        check_files([ds], workers=1, progress=False)
    assert ds.reads < 20  # the queued reads were dropped
