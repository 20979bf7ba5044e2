"""The stop button (issue 14, items 1 and 8): an interrupt keeps the last completed step, a resume
from it in the same kernel is bit-identical to a straight run, and no interrupt corrupts a file."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import nbtools as nbt
import nbtools.atomic
from nbtools.atomic import save_atomic
from nbtools.runs import load_checkpoint
from tests.helpers import assert_same, small_cnn, tiny_fit, without_times
from tests.test_resume import CFG as RESUME_CFG

# 6 batches per epoch, 3 steps of 2 micro-batches, a telemetry read every 2 steps
CFG = dataclasses.replace(RESUME_CFG, precision="fp32")  # test_resume's run, in fp32
ROOT = Path(__file__).resolve().parents[1]


def _train(run_dir, model=None, **kw):
    kw.setdefault("verbose", False)
    return tiny_fit(CFG, run_dir, model=model or small_cnn(), **kw)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight")
    return d, _train(d)


def _same_as_straight(straight, run_dir, run):
    a, b = load_checkpoint(straight[0] / "epoch_004.pt"), load_checkpoint(run_dir / "epoch_004.pt")
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "early_stopping", "epoch", "step"):
        assert_same(a[key], b[key], key)
    assert_same(straight[1].model.state_dict(), run.model.state_dict(), "final model")
    val = [{k: v for k, v in h.items() if k.startswith("val_")} for h in without_times(straight[1].history)]
    assert val == [{k: v for k, v in h.items() if k.startswith("val_")} for h in run.history]


class PressStop:
    """A batch_transform that sends this process SIGINT at batch `at` (1-based): the stop button."""

    def __init__(self, at: int):
        self.n, self.at = 0, at

    def __call__(self, x, y):
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return x, y


# at: the batch (1-based) whose loading the press comes in; the press waits for that step to end.
# 13, 15: the first micro-batch of epoch 3's first / second step; 11: epoch 2's last step, before
# its validation (the checkpoint then holds all 6 batches, and the resume validates epoch 2)
@pytest.mark.parametrize(
    "at, epoch, batch, step", [(13, 3, 2, 7), (15, 3, 4, 8), (11, 2, 6, 6)], ids=["13", "15", "11"]
)
def test_stop_button_writes_the_last_completed_step_and_resumes_bit_identically(
    straight, tmp_path, at, epoch, batch, step, capsys
):
    model = small_cnn()
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, model, batch_transform=PressStop(at), verbose=True, dashboard="text")
    said = capsys.readouterr()
    said = said.out + said.err
    name = f"epoch_{epoch:03d}_step_{step:07d}.pt"
    latest = nbt.list_checkpoints(tmp_path)[-1]
    assert latest.path.name == name and latest.valid and latest.batch == batch, latest
    assert f"kept the last completed step (epoch {epoch}, batch {batch}, step {step}) in {name}" in said
    assert 'resume="latest"' in said
    assert nbt.runs.Run.load(tmp_path).stop.code == "interrupted"
    # the same kernel, the same model object (its .grad from the interrupted session left on it)
    run = _train(tmp_path, model, resume="latest")
    _same_as_straight(straight, tmp_path, run)


class RaiseInside:
    """A forward hook raising KeyboardInterrupt in the 2nd micro-batch of step `step`: after the 1st
    micro-batch's backward, so `.grad` and BatchNorm statistics hold a half-done step."""

    def __init__(self, step: int):
        self.calls, self.at = 0, 2 * step

    def __call__(self, module, args, output):
        if module.training:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt


def test_an_interrupt_inside_a_step_writes_nothing_and_resume_in_the_same_kernel_is_bit_identical(
    straight, tmp_path, capsys
):
    model = small_cnn()
    handle = model.register_forward_hook(RaiseInside(step=8))  # epoch 3's second step
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, model, verbose=True, dashboard="text")
    handle.remove()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    said = capsys.readouterr()
    assert "interrupted inside step 8" in said.out + said.err and "epoch_002.pt" in said.out + said.err
    assert [c.path.name for c in nbt.list_checkpoints(tmp_path)] == ["epoch_001.pt", "epoch_002.pt"]
    run = _train(tmp_path, model, resume="latest")
    _same_as_straight(straight, tmp_path, run)


def test_an_interrupt_before_anything_was_kept_leaves_no_run_behind(tmp_path, capsys):
    model = small_cnn()
    handle = model.register_forward_hook(RaiseInside(step=1))
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, model, verbose=True, dashboard="text")
    handle.remove()
    said = capsys.readouterr()
    assert "nothing to resume; start the run again as before" in said.out + said.err
    assert not nbt.list_checkpoints(tmp_path) and not (tmp_path / "metrics.json").exists()


def test_a_second_press_during_the_interrupt_checkpoint_corrupts_nothing(tmp_path, monkeypatch):
    real = nbtools.atomic._torch_save

    press = PressStop(9)

    def press_twice_mid_write(obj, f):
        if press.n < press.at:  # the epoch checkpoints before the press
            return real(obj, f)
        f.write(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGINT)  # held back: the write goes on
        os.kill(os.getpid(), signal.SIGINT)  # the user insists: it stops now
        real(obj, f)

    monkeypatch.setattr(nbtools.atomic, "_torch_save", press_twice_mid_write)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, batch_transform=press)
    checkpoints = nbt.list_checkpoints(tmp_path)
    assert [c.path.name for c in checkpoints] == ["epoch_001.pt"] and checkpoints[0].valid
    assert not list(tmp_path.glob(".*.tmp*")), "a temp file was left behind"


def test_one_more_press_during_the_interrupt_checkpoint_waits_for_it(tmp_path, monkeypatch):
    real = nbtools.atomic._torch_save

    press = PressStop(9)

    def press_mid_write(obj, f):
        if press.n >= press.at:
            os.kill(os.getpid(), signal.SIGINT)
        real(obj, f)

    monkeypatch.setattr(nbtools.atomic, "_torch_save", press_mid_write)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, batch_transform=press)  # in epoch 2's second step (step 5), which ends at batch 10
    latest = nbt.list_checkpoints(tmp_path)[-1]
    assert latest.path.name == "epoch_002_step_0000005.pt" and latest.valid


def test_a_keyboard_interrupt_inside_torch_save_surfaces_as_itself(tmp_path, monkeypatch):
    real_open = open

    class Interrupted:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, b):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(
        nbtools.atomic, "open", lambda *a, **k: Interrupted(real_open(*a, **k)), raising=False
    )
    with pytest.raises(KeyboardInterrupt):
        save_atomic({f"w{i}": torch.zeros(1000) for i in range(5)}, tmp_path / "b.pt")
    assert not (tmp_path / "b.pt").exists() and not list(tmp_path.glob(".*.tmp*"))


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from torch import nn
    import nbtools as nbt
    from tests.helpers import NoisyBlobs, small_cnn

    run_dir = Path(sys.argv[1])
    n = 0

    def slow(x, y):
        global n
        n += 1
        if n == 8:
            (run_dir / "started").write_text("")
        time.sleep(0.05)
        return x, y

    cfg = nbt.TrainConfig(epochs=2, batch_size=2, lr=1e-2, log_every=5, checkpoint_every_minutes=None,
                          precision="fp32", seed=0)
    nbt.fit(small_cnn(), NoisyBlobs(400), NoisyBlobs(16, seed=1), nn.CrossEntropyLoss(), cfg, run_dir,
            batch_transform=slow, verbose=False)
    """
)


@pytest.mark.slow
def test_sigint_to_a_real_training_process_leaves_a_loadable_mid_epoch_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "started").exists():
        assert child.poll() is None and time.monotonic() < deadline, (
            child.stderr.read() if child.poll() else ""
        )
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    found = nbt.list_checkpoints(run_dir)
    assert len(found) == 1 and found[0].mid_epoch and found[0].valid, (found, err)
    state = load_checkpoint(found[0].path)
    assert state["epoch"] == 0 and 8 <= state["batch"] < 200 and state["step"] == state["batch"]
    assert not list(run_dir.glob(".*.tmp*"))
