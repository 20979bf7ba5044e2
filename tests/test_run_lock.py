"""One writer per run folder: a real second process is refused naming the holder, a SIGKILLed
holder's stale lock is taken over with a message, and the lock goes with fit's exceptions."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch import nn

import nbtools as nbt
from nbtools.runs import RunLock, RunLockedError
from nbtools.runs.files import LOCK_FILE
from tests.helpers import NoisyBlobs, small_cnn

ROOT = Path(__file__).resolve().parents[1]
CFG = nbt.TrainConfig(epochs=2, batch_size=8, checkpoint_every_minutes=None)

# A training process that keeps going (slowly) until it is killed.
HOLDER = """
import sys, time, torch
from torch import nn
import nbtools as nbt
from tests.helpers import NoisyBlobs, small_cnn
torch.set_num_threads(1)
def slow(x, y):
    time.sleep(0.05)
    return x, y
cfg = nbt.TrainConfig(epochs=10_000, batch_size=8, checkpoint_every_minutes=None)
nbt.fit(small_cnn(), NoisyBlobs(), NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg,
        sys.argv[1], batch_transform=slow, verbose=False)
"""


def _fit(run_dir, cfg=CFG, **kw):
    args = (NoisyBlobs(), NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg)
    return nbt.fit(small_cnn(), *args, run_dir, verbose=False, **kw)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "epoch_001.pt").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the holder did not start training"
            time.sleep(0.1)
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == child.pid and holder["host"] == socket.gethostname() and holder["started"]
        for resume in ("latest", None):
            with pytest.raises(RunLockedError, match=rf"pid {child.pid} on host .*, started .*UTC") as e:
                _fit(tmp_path, resume=resume)
            assert str(tmp_path / LOCK_FILE) in str(e.value) and "another run_dir" in str(e.value)
        epochs = len(nbt.list_checkpoints(tmp_path, verify=False))
        while len(nbt.list_checkpoints(tmp_path, verify=False)) <= epochs:  # the holder trains on, unharmed
            assert child.poll() is None and time.monotonic() < deadline, "the refused fit hurt the holder"
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    assert (tmp_path / LOCK_FILE).exists()  # a SIGKILL releases nothing
    newest = nbt.list_checkpoints(tmp_path).valid()[-1].epoch
    with caplog.at_level(logging.WARNING):
        run = _fit(tmp_path, CFG.replace(epochs=newest + 1), resume="latest")
    assert run.history[-1]["epoch"] == newest + 1
    assert f"took over the stale lock of pid {child.pid}" in caplog.text and "no longer runs" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()  # released on return


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_fit_raises(tmp_path, failure):
    batches = iter(range(10**6))

    def transform(x, y):
        if next(batches) == 3:
            raise failure("the runtime went away")
        return x, y

    with pytest.raises(failure):
        _fit(tmp_path, batch_transform=transform)
    assert not (tmp_path / LOCK_FILE).exists()
    # refused before training (a group that matches no parameter): released too
    with pytest.raises(ValueError, match="nosuchgroup"):
        _fit(tmp_path, CFG.replace(group_lrs={"nosuchgroup": 1e-3}), overwrite=True)
    assert not (tmp_path / LOCK_FILE).exists()


def _plant(run_dir: Path, age_s: float = 0.0, **holder) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01 00:00:00 UTC"}
    path.write_text(json.dumps({**base, "token": "planted", **holder}))
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_lock_from_another_host_is_refused_until_its_heartbeat_is_stale(tmp_path, caplog):
    _plant(tmp_path, host="old-colab-runtime", pid=4242)
    with pytest.raises(RunLockedError, match=r"pid 4242 on host 'old-colab-runtime'"):
        RunLock(tmp_path).acquire()
    _plant(tmp_path, age_s=11 * 60, host="old-colab-runtime", pid=4242)
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "has not refreshed it for 11 minutes" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_reused_pid_does_not_keep_a_dead_holders_lock(tmp_path, caplog):
    _plant(tmp_path, process_start="1")  # our pid, but another process's start time
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        pass
    assert "its pid now belongs to another process" in caplog.text


def test_a_lock_of_this_very_process_is_held(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        _fit(tmp_path)
