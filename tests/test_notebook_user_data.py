"""04_resume on a run trained on the user's NIfTI folder: it rebuilds exactly those files and trains on,
and when a file was relabelled it stops in the rebuild cell with the file named."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import nbtools as nbt
from tests.user_files import write_nifti_folder

ROOT = Path(__file__).resolve().parents[1]


def _run_04(cwd: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "04_resume.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


@pytest.mark.slow
def test_04_resumes_a_folder_run_on_its_files_and_refuses_a_relabelled_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's nbtools
    monkeypatch.setenv("NBTOOLS_SMOKE", "1")  # 04 trains on to epoch 4
    vols = write_nifti_folder(tmp_path / "vols")
    train = [
        sys.executable,
        "-m",
        "nbtools",
        "train",
        "resnet3d",
        "--data",
        "vols",
        "--shape",
        "16",
        "16",
        "16",
    ]
    r = subprocess.run(
        [*train, "--smoke", "--batch-size", "4", "--run-dir", "runs/resnet3d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _run_04(tmp_path)
    run = nbt.runs.Run.load(tmp_path / "runs/resnet3d")
    assert run.epoch == 4 and [h["step"] for h in run.history] == [2, 4, 6, 8]  # 11 files, batch 4
    assert run.meta["data"]["split"]["n_val"] == 3 and run.history[-1]["val_confusion"]
    assert sum(map(sum, run.history[-1]["val_confusion"])) == 3  # validated on the same 3 files
    shutil.move(vols / "malignant/case_101.nii.gz", vols / "benign/case_101.nii.gz")
    with pytest.raises(CellExecutionError, match=r"case_101\.nii\.gz: malignant -> benign"):
        _run_04(tmp_path)
    assert nbt.runs.Run.load(tmp_path / "runs/resnet3d").epoch == 4  # nothing trained on them
