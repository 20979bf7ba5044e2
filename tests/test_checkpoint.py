"""Checkpoints: atomic under SIGKILL, weights_only-loadable, corrupt files named, pruning after the write."""

import multiprocessing as mp
import os
import random
import signal
import time

import pytest
import torch

import nbtools as nbt
from nbtools.atomic import save_atomic
from nbtools.runs import checkpoints as ckpt
from tests.helpers import tiny_fit

CFG = nbt.TrainConfig(
    epochs=200,
    batch_size=8,
    log_every=1,
    checkpoint_every_steps=1,
    keep_last=2,
    checkpoint_every_minutes=None,
    ema_decay=0.9,
)


def _train_forever(run_dir: str) -> None:
    torch.set_num_threads(1)
    resume = "latest" if nbt.list_checkpoints(run_dir).valid() else None
    tiny_fit(CFG, run_dir, resume=resume, overwrite=resume is None)


def _names(run_dir) -> set[str]:
    return {p.name for p in run_dir.glob("epoch_*.pt")}


@pytest.mark.slow
def test_sigkill_never_leaves_an_unloadable_newest_checkpoint(tmp_path):
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["nbtools", "tests.helpers", "torch._dynamo"]
    )  # optimizers import dynamo: 1.7 s a child otherwise
    rng = random.Random(0)
    steps_seen = []
    for _ in range(20):
        before = _names(tmp_path)
        child = ctx.Process(target=_train_forever, args=(str(tmp_path),))
        child.start()
        # until the child is training and has written a new checkpoint: ~8 s a round with load 12 on the
        # 2 cores (the forkserver preloads the imports), less on a quiet machine; the cap holds at 10x
        deadline = time.monotonic() + 120
        while _names(tmp_path) <= before:
            assert child.is_alive() and time.monotonic() < deadline, (
                f"the child (exit code {child.exitcode}) wrote no new checkpoint in 120 s; had {sorted(before)}"
            )
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))  # then kill it at a random moment, mid-write or not
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        valid = nbt.list_checkpoints(tmp_path).valid()
        assert valid, "no valid checkpoint after a kill"
        newest = ckpt.load_checkpoint(valid[-1].path)  # a full load, not just the listing's check
        assert newest["step"] == valid[-1].step
        steps_seen.append(newest["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0], steps_seen  # each run resumed
    run = tiny_fit(
        CFG.replace(epochs=max(h["epoch"] for h in _history(tmp_path)) + 1), tmp_path, resume="latest"
    )
    assert run.history[-1]["epoch"] == run.config.epochs
    assert not list(tmp_path.glob(".*.tmp*"))  # the kill's leftover temp file was cleaned at the start


def _history(run_dir):
    state = ckpt.load_checkpoint(nbt.list_checkpoints(run_dir).valid()[-1].path)
    return state["run"]["history"] or [{"epoch": 0}]


def _two_epochs(tmp_path):
    cfg = nbt.TrainConfig(epochs=2, batch_size=8, checkpoint_every_minutes=None)
    return tiny_fit(cfg, tmp_path)


def test_truncated_checkpoint_is_named_and_latest_falls_back(tmp_path, caplog):
    _two_epochs(tmp_path)
    newest = tmp_path / "epoch_002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    listing = nbt.list_checkpoints(tmp_path)
    assert [c.valid for c in listing] == [True, False]
    with pytest.raises(ckpt.CheckpointError, match=r"epoch_002\.pt is truncated or corrupt"):
        ckpt.load_checkpoint(newest)
    with pytest.raises(ckpt.CheckpointError, match=r"epoch_002\.pt"):
        ckpt.find_checkpoint(tmp_path, 2)
    assert ckpt.find_checkpoint(tmp_path, "latest").path.name == "epoch_001.pt"
    assert "skipping" in caplog.text and "epoch_002.pt" in caplog.text


def test_checkpoints_load_weights_only_and_hold_the_whole_state(tmp_path):
    run = _two_epochs(tmp_path)
    state = torch.load(tmp_path / "epoch_002.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "precision", "early_stopping", "rng", "run", "config"} <= set(
        state
    )
    assert state["epoch"] == 2 and state["batch"] == 0
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(best) == set(run.model.state_dict())  # weights only, for inference
    for name in ("last.pt", "metrics.json", "config.json", "loss_curve.png", "learning_curves.png"):
        assert (tmp_path / name).is_file(), name


def test_prune_keeps_last_n_and_only_after_the_new_file(tmp_path):
    cfg = nbt.TrainConfig(epochs=5, batch_size=8, keep_last=2, checkpoint_every_minutes=None)
    tiny_fit(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_004.pt", "epoch_005.pt"]


def test_save_atomic_leaves_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "x.pt"
    save_atomic({"a": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_overwrite_starts_again(tmp_path):
    _two_epochs(tmp_path)
    cfg = nbt.TrainConfig(epochs=1, batch_size=8, checkpoint_every_minutes=None)
    run = tiny_fit(cfg, tmp_path, overwrite=True)
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path)] == [1] and len(run.history) == 1
