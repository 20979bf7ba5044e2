"""`python -m nbtools train ... --data`: a user's NIfTI and PNG folders from the command line, a process
SIGKILLed after an epoch checkpoint, and `--resume latest` on exactly the same files."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nbtools as nbt
from nbtools import recipes
from tests.helpers import assert_same, without_times
from tests.user_files import write_nifti_folder, write_png_folder

pytestmark = pytest.mark.slow  # each test trains on files through `python -m nbtools` subprocesses

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "resnet3d", "--data", "vols", "--shape", "16", "16", "16", "--smoke", "--batch-size", "4"]


def _cmd(*args):
    return [sys.executable, "-m", "nbtools", *args]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


def _cli(*args, cwd):
    return subprocess.run(_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=300, env=_env())


def _killed_after_first_epoch(run_dir: str, cwd: Path, epochs: int) -> None:
    """Start training and SIGKILL it as soon as epoch 1's checkpoint is on disk (a Colab disconnect)."""
    proc = subprocess.Popen(
        _cmd(*TRAIN, "--epochs", str(epochs), "--run-dir", run_dir),
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (cwd / run_dir / "epoch_001.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (
            "training ended before epoch 1's checkpoint"
        )
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cwd / run_dir / "last.pt").exists(), "the run finished before the kill: make it longer"


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_killed_cli_run_resumes_on_the_same_files_bit_identically(tmp_path):
    write_nifti_folder(tmp_path / "vols")  # benign 8, malignant 6: 11 train, 3 val
    r = _cli(*TRAIN, "--epochs", "4", "--run-dir", "runs/straight", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "positive class: 'malignant'" in r.stdout and "11 train, 3 val" in r.stdout
    assert "classes: 0 benign, 1 malignant (positive)" in r.stdout
    straight = nbt.runs.Run.load(tmp_path / "runs/straight")
    assert [h["step"] for h in straight.history] == [2, 4, 6, 8]

    _killed_after_first_epoch("runs/cli", tmp_path, epochs=4)
    r = _cli("train", "resnet3d", "--run-dir", "runs/cli", "--resume", "latest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data: the same files as the run was trained on (14 files, 11 train, 3 val)" in r.stdout
    resumed = nbt.runs.Run.load(tmp_path / "runs/cli")
    assert resumed.meta["data"]["split"]["n_val"] == 3 and resumed.history[-1]["val_confusion"]
    assert without_times(resumed.history) == without_times(straight.history)
    assert_same(_weights(tmp_path / "runs/straight/last.pt"), _weights(tmp_path / "runs/cli/last.pt"))

    # the same, resumed in this process through load_job (as 04_resume does)
    _killed_after_first_epoch("runs/nb", tmp_path, epochs=4)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the run recorded its data as "vols", relative to where it started
    try:
        job = recipes.load_job("runs/nb")
        assert (len(job.train_data), len(job.val_data)) == (11, 3)
        run = job.fit("runs/nb", resume="latest", verbose=False)
    finally:
        os.chdir(cwd)
    assert without_times(run.history) == without_times(straight.history)
    assert_same(_weights(tmp_path / "runs/straight/last.pt"), run.model.state_dict())


def test_cli_resume_refuses_changed_files_and_follows_a_moved_folder(tmp_path):
    vols = write_nifti_folder(tmp_path / "vols")
    r = _cli(*TRAIN, "--epochs", "1", "--run-dir", "runs/a", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shutil.move(vols / "benign/case_002.nii.gz", vols / "malignant/case_002.nii.gz")
    r = _cli("train", "resnet3d", "--run-dir", "runs/a", "--resume", "latest", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 2
    assert (
        "relabelled (case_002.nii.gz: benign -> malignant)" in r.stderr and "--allow-changed-data" in r.stderr
    )
    assert "allow_changed_data=True" not in r.stderr and "Traceback" not in r.stderr
    shutil.move(vols / "malignant/case_002.nii.gz", vols / "benign/case_002.nii.gz")
    shutil.move(vols, tmp_path / "mounted")
    r = _cli("train", "resnet3d", "--run-dir", "runs/a", "--resume", "latest", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--data NEW_PATH" in r.stderr
    r = _cli(
        "train", "resnet3d", "--run-dir", "runs/a", "--resume", "latest", "--epochs", "2", "--data", "mounted",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "data moved:" in r.stdout and "the same 14 files" in r.stdout
    assert nbt.runs.Run.load(tmp_path / "runs/a").epoch == 2


def test_focal2d_trains_on_a_png_folder_from_the_cli(tmp_path):
    write_png_folder(tmp_path / "pages")
    args = ["train", "focal2d", "--data", "pages", "--size", "32", "--smoke", "--batch-size", "4"]
    r = _cli(*args, "--epochs", "1", "--run-dir", "runs/f", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = nbt.runs.Run.load(tmp_path / "runs/f")
    assert run.meta["data"]["positive"] == "forged" and run.meta["data"]["split"]["n_val"] == 4
    assert run.history[-1]["step"] == 3  # 12 training pages, batch 4
    r = _cli("train", "focal2d", "--data", "pages", "--shape", "1", "2", "3", "--run-dir", "x", cwd=tmp_path)
    assert r.returncode == 2 and "--shape is not a flag of focal2d; it takes --size" in r.stderr
