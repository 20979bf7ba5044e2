import logging
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import nbtools as nbt
import nbtools.env as env_module


def test_setup_prints_one_line_and_seeds(capsys):
    env = nbt.setup(seed=3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    nbt.seed_everything(3)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "device cpu" in out[0] and "precision fp32" in out[0]
    assert env.precision == "fp32" and not env.is_colab and env.gpu_name is None


def test_clear_cache_returns_bytes_and_tolerates_missing(tmp_path):
    assert nbt.clear_cache(tmp_path / "nope") == 0
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "sub" / "a.npy").write_bytes(b"x" * 1000)
    (tmp_path / "c" / "b.pkl").write_bytes(b"y" * 24)
    assert nbt.clear_cache(tmp_path / "c") == 1024
    assert not (tmp_path / "c").exists()


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """Pretend to be in Colab (or not): `colab(True)`; returns the list of mount_drive calls, each
    "mounting" tmp_path/drive."""
    mounts = []

    def fake_mount(mount_point="/content/drive"):
        mounts.append(mount_point)
        return tmp_path / "drive" / "MyDrive"

    def set_colab(where: bool):
        monkeypatch.setattr(env_module, "is_colab", lambda: where)
        monkeypatch.setattr(env_module, "mount_drive", fake_mount)
        return mounts

    return set_colab


@pytest.mark.parametrize("use_drive", ["auto", True])
def test_runs_root_is_drive_in_colab(colab, tmp_path, use_drive):
    mounts = colab(True)
    assert nbt.runs_root(use_drive) == tmp_path / "drive" / "MyDrive" / "nbtools-runs"
    assert nbt.runs_root(use_drive, folder="mine").name == "mine"
    assert len(mounts) == 2


def test_runs_root_auto_is_the_default_and_local_outside_colab(colab):
    mounts = colab(False)
    assert nbt.runs_root() == nbt.runs_root("auto") == Path("runs")
    assert mounts == []


def test_runs_root_false_never_mounts_even_in_colab(colab):
    mounts = colab(True)
    assert nbt.runs_root(False) == Path("runs") and mounts == []


def test_runs_root_true_outside_colab_falls_back_to_runs(monkeypatch, caplog):
    monkeypatch.setattr(env_module, "is_colab", lambda: False)
    with caplog.at_level(logging.INFO, logger="nbtools.env"):
        assert nbt.runs_root(True) == Path("runs")
    assert "not in Colab" in caplog.text


@pytest.mark.parametrize("bad", ["yes", "drive", None, 1])
def test_runs_root_rejects_other_values(bad):
    with pytest.raises(ValueError, match=r"use_drive must be 'auto', True or False, got"):
        nbt.runs_root(bad)


def fake_google_colab(monkeypatch, mount):
    """Put a stand-in `google.colab.drive` (with `mount`) in sys.modules, and say we are in Colab."""
    google, colab, drive = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.drive"))
    drive.mount = mount
    colab.drive, google.colab = drive, colab
    for module in (google, colab, drive):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    assert env_module.is_colab()


def test_mount_drive_mounts_once_per_call_and_returns_mydrive(monkeypatch):
    calls = []
    fake_google_colab(monkeypatch, calls.append)
    assert nbt.mount_drive() == Path("/content/drive/MyDrive")
    assert nbt.runs_root("auto") == Path("/content/drive/MyDrive/nbtools-runs")
    assert calls == ["/content/drive", "/content/drive"]


def test_mount_drive_failure_names_the_mount_point_and_the_way_out(monkeypatch):
    def refuse(mount_point):
        raise ValueError("mount failed")

    fake_google_colab(monkeypatch, refuse)
    with pytest.raises(RuntimeError, match=r"/content/drive \(ValueError: mount failed\).*USE_DRIVE = False"):
        nbt.runs_root("auto")
