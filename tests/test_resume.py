"""Resume is bit-identical: 4 epochs straight == interrupted + resumed, at an epoch boundary and mid-epoch."""

import copy

import pytest
import torch

import nbtools as nbt
from nbtools.runs import load_checkpoint
from tests.helpers import StopAfter, assert_same, small_cnn, tiny_fit, without_times

CFG = nbt.TrainConfig(
    epochs=4,
    batch_size=8,
    lr=1e-2,
    warmup_epochs=1,
    grad_accum=2,
    clip_norm=1.0,
    ema_decay=0.9,
    log_every=2,
    checkpoint_every_minutes=None,
    keep_last=10,
    seed=3,
)


def _train(run_dir, cfg=CFG, **kw):
    return tiny_fit(cfg, run_dir, **kw)


def _compare(dir_a, dir_b, run_a, run_b):
    a, b = load_checkpoint(dir_a / "epoch_004.pt"), load_checkpoint(dir_b / "epoch_004.pt")
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "ema",
        "rng",
        "early_stopping",
        "precision",
        "epoch",
        "step",
    ):
        assert_same(a[key], b[key], key)
    assert_same(run_a.model.state_dict(), run_b.model.state_dict(), "final model")
    assert without_times(run_a.history) == without_times(run_b.history)
    assert without_times(run_a.steps) == without_times(run_b.steps)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight")
    return d, _train(d)


def test_resume_at_epoch_boundary_is_bit_identical(straight, tmp_path):
    # 6 batches per epoch: stop at the first batch of epoch 3, resume from epoch 2's checkpoint.
    with pytest.raises(StopAfter.Disconnect):
        _train(tmp_path, batch_transform=StopAfter(12))
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path)] == [1, 2]
    run = _train(tmp_path, resume=2)
    _compare(straight[0], tmp_path, straight[1], run)


def test_resume_mid_epoch_is_bit_identical(straight, tmp_path):
    cfg = CFG.replace(checkpoint_every_steps=2)
    with pytest.raises(StopAfter.Disconnect):
        _train(tmp_path, cfg, batch_transform=StopAfter(17))  # dies in epoch 3, on its 6th batch
    latest = nbt.list_checkpoints(tmp_path)[-1]
    assert latest.mid_epoch and latest.epoch == 2 and latest.batch == 4, latest
    run = _train(tmp_path, cfg, resume="latest")
    # checkpoint_every_steps only adds files; the training itself must match the straight run
    a = load_checkpoint(straight[0] / "epoch_004.pt")
    b = load_checkpoint(tmp_path / "epoch_004.pt")
    for key in ("model", "optimizer", "scheduler", "ema", "rng"):
        assert_same(a[key], b[key], key)
    assert without_times(straight[1].history) == without_times(run.history)


def test_resume_refuses_to_train_over_a_run(straight, tmp_path):
    _train(tmp_path, CFG.replace(epochs=1))
    with pytest.raises(nbt.runs.RunExistsError, match=r"found epochs 1.*resume=\"latest\""):
        _train(tmp_path, CFG.replace(epochs=1))


def test_resume_with_new_config_reports_changes(tmp_path, capsys):
    _train(tmp_path, CFG.replace(epochs=2))
    run = tiny_fit(CFG.replace(epochs=3, lr=1e-3, clip_norm=0.5), tmp_path, resume="latest", verbose=True)
    said = capsys.readouterr()  # once: a second read returns nothing
    assert (
        "config change: lr: 0.01 -> 0.001" in said.out and "config change: clip_norm: 1.0 -> 0.5" in said.out
    )
    # the progress bar (stderr outside a notebook) trains epoch 3 only
    assert "epoch 3/3" in said.err and "epoch 1/3" not in said.err and "epoch 2/3" not in said.err
    assert run.config_changes[0]["changes"]["lr"] == (0.01, 0.001)
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    # the new base LR took effect on the schedule: epoch 3's LR is at most the new base
    assert run.history[-1]["lr"]["default"] <= 1e-3


def test_resume_missing_epoch_names_what_exists(tmp_path):
    _train(tmp_path, CFG.replace(epochs=2))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for epoch 7 in .*found epochs 1-2"):
        _train(tmp_path, resume=7)


def test_a_fresh_model_object_resumes_from_the_checkpoints_weights(tmp_path):
    first = _train(tmp_path, CFG.replace(epochs=1))
    saved = load_checkpoint(tmp_path / "epoch_001.pt")["model"]
    fresh, at_first_batch = small_cnn(), []

    def look(x, y):
        if not at_first_batch:
            at_first_batch.append(copy.deepcopy(fresh.state_dict()))
        return x, y

    assert not torch.equal(fresh.state_dict()["0.weight"], saved["0.weight"])  # it starts elsewhere
    run = _train(tmp_path, CFG.replace(epochs=2), model=fresh, resume="latest", batch_transform=look)
    assert_same(at_first_batch[0], saved)  # and trains on from the checkpoint's weights and buffers
    assert run.model is fresh and [h["epoch"] for h in run.history] == [1, 2]
    assert without_times(run.history[:1]) == without_times(first.history)
    assert_same(fresh.state_dict(), load_checkpoint(tmp_path / "epoch_002.pt")["model"])
