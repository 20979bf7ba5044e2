"""A run folder written by an earlier nbtools (main f10d404: checkpoints of version 1, metrics.json
without a version; tests/fixtures/make_run_f10d404.py wrote it) is read through nbtools.runs.upgrade:
listed, compared, predicted from, and resumed, bit-identically to the straight run it holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import nbtools as nbt
from nbtools.runs import Run, load_checkpoint
from nbtools.runs.upgrade import VERSION
from tests.fixtures.make_run_f10d404 import CONFIG
from tests.helpers import NoisyBlobs, assert_same, small_cnn, tiny_fit

FIXTURE = Path(__file__).parent / "fixtures" / "run_f10d404"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run_dir = tmp_path / "old"
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_the_fixture_is_of_the_version_before_this_one():
    assert load_checkpoint(FIXTURE / "epoch_001.pt")["version"] == 1 == VERSION - 1
    assert "version" not in json.loads((FIXTURE / "metrics.json").read_text())


def test_an_old_run_folder_is_listed_and_compared(old_run):
    found = nbt.list_checkpoints(old_run)
    assert [c.epoch for c in found] == [1, 2] and all(c.valid for c in found)
    assert found[-1].metrics["val_loss"] == Run.load(old_run).history[-1]["val_loss"]
    row = nbt.compare_runs([old_run]).rows[0]
    assert row["status"] == "finished" and row["epochs"] == 2 and row["best_value"] is not None
    run = Run.load(old_run)
    assert run.stop is None and run.meta == {"note": "written by nbtools main f10d404"} and run.sessions


def test_an_old_run_predicts_with_its_best_weights(old_run):
    run = Run.load(old_run)
    run.model = small_cnn()  # a plain fit's run: predict copies the model and loads best.pt into it
    data = NoisyBlobs(seed=1, augment=False)
    preds = nbt.predict(run, data)
    model = small_cnn()
    model.load_state_dict(torch.load(old_run / "best.pt", weights_only=True))
    assert preds.probs.shape == (len(data), 2)
    assert (preds.probs == nbt.predict(model, data).probs).all()


def test_an_old_checkpoint_resumes_to_the_straight_run_it_was_part_of(old_run, capsys):
    run = tiny_fit(nbt.TrainConfig(**CONFIG), old_run, resume=1, verbose=True)
    assert "resuming" in capsys.readouterr().out and [h["epoch"] for h in run.history] == [1, 2]
    old, new = load_checkpoint(FIXTURE / "epoch_002.pt"), load_checkpoint(old_run / "epoch_002.pt")
    for key in ("model", "optimizer", "ema", "early_stopping", "ema_best", "rng"):
        assert_same(old[key], new[key], key)
    assert (
        new["version"] == VERSION and json.loads((old_run / "metrics.json").read_text())["version"] == VERSION
    )
