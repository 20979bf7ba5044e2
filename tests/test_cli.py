"""The README's main job, end to end at smoke size, as a user runs it."""

import subprocess
import sys

import pytest

import nbtools as nbt

pytestmark = pytest.mark.slow  # each test trains a recipe job through `python -m nbtools` subprocesses


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "nbtools", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_main_job_trains_resumes_and_refuses_an_overwrite_or_another_recipe(tmp_path):
    r = _cli("train", "resnet3d", "--run-dir", "runs/demo", "--smoke", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"run folder: {tmp_path / 'runs' / 'demo'}" in r.stdout and "val_auc" in r.stdout  # absolute
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path / "runs/demo")] == [1, 2]
    # "Run all" again after a disconnect: refused, with the choices named, and nothing touched
    r = _cli("train", "resnet3d", "--run-dir", "runs/demo", "--smoke", cwd=tmp_path)
    assert r.returncode == 2 and "--resume latest" in r.stderr and "--overwrite" in r.stderr
    # resuming with another recipe, or a folder that holds no run, is refused naming why
    r = _cli("train", "focal2d", "--run-dir", "runs/demo", "--resume", "latest", cwd=tmp_path)
    assert r.returncode == 2 and "trained with the 'resnet3d' recipe" in r.stderr
    r = _cli("train", "resnet3d", "--run-dir", "runs/none", "--resume", "latest", cwd=tmp_path)
    assert r.returncode == 2 and "cannot resume runs/none" in r.stderr
    r = _cli(
        "train",
        "resnet3d",
        "--run-dir",
        "runs/demo",
        "--smoke",
        "--resume",
        "latest",
        "--epochs",
        "3",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "config change: epochs: 2 -> 3" in r.stdout + r.stderr
    assert nbt.runs.Run.load(tmp_path / "runs/demo").epoch == 3
    r = _cli("checkpoints", "runs/demo", cwd=tmp_path)
    assert "epoch_003.pt" in r.stdout and "yes" in r.stdout


def test_focal2d_job_trains_from_the_cli(tmp_path):
    r = _cli("train", "focal2d", "--run-dir", "runs/focal", "--smoke", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = nbt.runs.Run.load(tmp_path / "runs/focal")
    assert run.meta["recipe"] == "focal2d" and run.epoch == 2
    assert set(run.config.group_lrs) == {"backbone", "attention", "classifier"}
