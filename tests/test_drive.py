"""Run folders on Google Drive: messages about a missing run say where runs are kept and why, and `fit`
hands a run on Drive to Drive when it ends, without unmounting it (a fake `google.colab` stands in)."""

import os
import sys
import types

import pytest

import nbtools as nbt
import nbtools.env as env_module
from tests.helpers import NoisyBlobs, tiny_fit

HINT = r'USE_DRIVE = "auto" .*Google Drive in Colab \(MyDrive/nbtools-runs/RUN_NAME\).*RUN_NAME and USE_DRIVE'


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """A stand-in `google.colab` whose drive records flush_and_unmount calls, a mount table holding
    tmp_path/drive as Colab's DriveFS (or nothing: `colab(mounted=False)`), and os.sync counted."""
    calls = {"flush_and_unmount": 0, "sync": 0}

    def setup(mounted: bool = True):
        google, colab_, drive = (
            types.ModuleType(n) for n in ("google", "google.colab", "google.colab.drive")
        )
        drive.mount = lambda mount_point, **kw: None

        def flush_and_unmount(timeout_ms=None):
            calls["flush_and_unmount"] += 1

        drive.flush_and_unmount = flush_and_unmount
        colab_.drive, google.colab = drive, colab_
        for module in (google, colab_, drive):
            monkeypatch.setitem(sys.modules, module.__name__, module)
        mounts = tmp_path / "mounts"
        lines = ["sysfs /sys sysfs rw 0 0", f"/dev/root {tmp_path} ext4 rw 0 0"]
        if mounted:
            lines.append(f"drive {tmp_path / 'drive'} fuse.drive rw,nosuid,nodev 0 0")
        mounts.write_text("\n".join(lines) + "\n")
        monkeypatch.setattr(env_module, "MOUNTS", str(mounts))
        monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
        return calls

    return setup


def test_messages_about_a_missing_run_say_where_runs_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = tmp_path / "runs" / "resnet3d"
    with pytest.raises(FileNotFoundError, match=rf"no loadable checkpoint in {here} .*{HINT}"):
        nbt.viz.checkpoint_picker("runs/resnet3d")
    with pytest.raises(FileNotFoundError, match=rf"no valid checkpoint in {here} to resume from .*{HINT}"):
        nbt.find_checkpoint("runs/resnet3d", "latest")
    with pytest.raises(FileNotFoundError, match=rf"{here} is not an nbtools run folder .*{HINT}"):
        nbt.runs.Run.load("runs/resnet3d")
    assert "not mounted" not in env_module.run_folder_hint()  # outside Colab Drive is no suspect


def test_in_colab_without_drive_the_message_says_so(colab, tmp_path):
    colab(mounted=False)
    with pytest.raises(FileNotFoundError, match="Google Drive is not mounted in this runtime"):
        nbt.find_checkpoint(tmp_path / "nothing", "latest")


def test_only_a_path_on_a_drive_mount_is_on_drive(colab, tmp_path):
    colab()
    assert env_module.drive_mount(tmp_path / "drive" / "MyDrive" / "nbtools-runs" / "x") == tmp_path / "drive"
    assert env_module.drive_mount(tmp_path / "drive") == tmp_path / "drive"
    assert env_module.drive_mount(tmp_path / "drive-not") is None and env_module.drive_mount(tmp_path) is None


def _fit(run_dir):
    cfg = nbt.TrainConfig(epochs=1, batch_size=16, checkpoint_every_minutes=None)
    return tiny_fit(cfg, run_dir, val=NoisyBlobs(seed=1), verbose=True)


def test_fit_hands_a_run_on_drive_to_drive_and_never_unmounts(colab, tmp_path, capsys):
    calls = colab()
    run_dir = tmp_path / "drive" / "MyDrive" / "nbtools-runs" / "demo"
    _fit(run_dir)
    assert calls == {"sync": 1, "flush_and_unmount": 0}
    out = capsys.readouterr().out
    assert f"{run_dir} is on Google Drive" in out and "flush_and_unmount() waits for the upload" in out
    _fit(tmp_path / "local")  # a run folder off Drive: nothing to hand over
    assert calls == {"sync": 1, "flush_and_unmount": 0}
