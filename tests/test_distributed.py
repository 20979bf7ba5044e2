"""fit under torchrun: 2 CPU processes over gloo on loopback (each launch bounded in time)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nbtools as nbt
from tests import ddp_worker
from tests.helpers import assert_same, small_cnn

pytestmark = pytest.mark.slow  # every test here launches torchrun (two training processes)

REPO = Path(__file__).resolve().parents[1]


def _torchrun(tmp_path: Path, run_dir: Path, *args: str, nproc: int = 2, name: str = "out") -> Path:
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "tests.ddp_worker",
        "--run-dir",
        str(run_dir),
        "--out",
        str(out),
        *args,
    ]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _load(out: Path, rank: int):
    return torch.load(out / f"rank{rank}.pt", weights_only=True), json.loads(
        (out / f"rank{rank}.json").read_text()
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # NaN planted in one sample: in each epoch exactly one rank draws it
    out = _torchrun(tmp, tmp / "run", "--epochs", "3", "--nan-at", "7")
    return tmp, out


def test_two_processes_train_in_sync_and_write_one_set_of_files(straight):
    tmp, out = straight
    (w0, h0), (w1, h1) = _load(out, 0), _load(out, 1)
    assert_same(w0, w1, "weights of rank 0 vs rank 1")
    assert h0 == h1 and len(h0["history"]) == 3
    files = sorted(p.name for p in (tmp / "run").iterdir() if not p.name.startswith("events.out.tfevents."))
    assert len(list((tmp / "run").glob("events.out.tfevents.*"))) == 1  # TensorBoard: rank 0 alone
    assert files == [
        "best.pt",
        "best_ema.pt",
        "best_val.pt",
        "config.json",
        "epoch_001.pt",
        "epoch_002.pt",
        "epoch_003.pt",
        "last.pt",
        "learning_curves.png",
        "loss_curve.png",
        "metrics.json",
    ]
    state = torch.load(tmp / "run" / "epoch_003.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])  # loads single-process
    assert len(state["rng_ranks"]) == 2
    nbt.models.load_pretrained(small_cnn(), tmp / "run" / "last.pt", strict=True, verbose=False)


def test_resumed_ddp_run_is_bit_identical(straight, tmp_path):
    _, out = straight
    run_dir = tmp_path / "run"
    # 64 samples / 2 ranks / batch 8 = 4 batches per epoch: die on the first batch of epoch 2
    _torchrun(tmp_path, run_dir, "--epochs", "3", "--nan-at", "7", "--stop-after", "4", name="dead")
    assert [c.epoch for c in nbt.list_checkpoints(run_dir)] == [1]
    resumed = _torchrun(
        tmp_path, run_dir, "--epochs", "3", "--nan-at", "7", "--resume", "latest", name="resumed"
    )
    for rank in (0, 1):
        (wa, ha), (wb, hb) = _load(out, rank), _load(resumed, rank)
        assert_same(wa, wb, f"rank {rank}")
        assert ha == hb


def test_matches_a_single_process_run_with_the_same_global_batch(tmp_path):
    # An MLP (no BatchNorm: per-rank batch statistics differ by design; no dropout: ranks draw
    # their own masks). Gradients then differ only in fp32 summation order (the all-reduce adds
    # two per-rank means), about 1e-7 relative per step; after 8 AdamW steps we allow 1e-5.
    ddp = _torchrun(
        tmp_path, tmp_path / "ddp", "--epochs", "2", "--model", "mlp", "--batch-size", "8", name="ddp"
    )
    one = tmp_path / "one"
    one.mkdir()
    ddp_worker.main(
        [
            "--run-dir",
            str(tmp_path / "run1"),
            "--out",
            str(one),
            "--epochs",
            "2",
            "--model",
            "mlp",
            "--batch-size",
            "16",
        ]
    )
    (w_ddp, _), (w_one, _) = _load(ddp, 0), _load(one, 0)
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], rtol=1e-5, atol=1e-5, msg=k)


def test_nan_on_one_rank_skips_the_step_on_both(straight):
    _, out = straight
    (w0, h0), (_, h1) = _load(out, 0), _load(out, 1)
    assert len(h0["skipped_steps"]) == 3 and h0["skipped_steps"] == h1["skipped_steps"]  # once per epoch
    assert [h["skipped"] for h in h0["history"]] == [1, 1, 1]
    assert all(torch.isfinite(v).all() for v in w0.values() if v.is_floating_point())


def test_cli_under_torchrun(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "nbtools",
        "train",
        "resnet3d",
        "--run-dir",
        str(tmp_path / "run"),
        "--smoke",
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path / "run")] == [1, 2]
