"""Named heads through fit: dict targets from the dataset, a MultiTaskLoss, per-head metrics
(val_cov_rmse, val_k_acc, ...) any of which can be the monitor, each term's loss and per-term gradients in
the telemetry, `loss-term-dominates` raised by a planted 1000x weight and not by a sane one, and a
bit-identical resume."""

import pytest
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.losses import MultiTaskLoss
from nbtools.runs import load_checkpoint
from tests.helpers import StopAfter, assert_same, without_times
from tests.test_term_rules import TwoHeads, seed002_like

CFG = nbt.TrainConfig(
    epochs=3, batch_size=16, lr=3e-3, optimizer="adam", monitor="val_k_acc", log_every=2,
    checkpoint_every_minutes=None, seed=0,
)  # fmt: skip


class Heads(Dataset):
    def __init__(self, n, seed):
        self.x, self.y = seed002_like(n, seed)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {"cov": self.y["cov"][i], "k": self.y["k"][i]}


def _fit(run_dir, cov_weight=1.0, cfg=CFG, **kw):
    loss = MultiTaskLoss({"cov": (nn.MSELoss(), cov_weight), "k": (nn.CrossEntropyLoss(), 1.0)})
    return nbt.fit(TwoHeads(), Heads(96, 0), Heads(32, 1), loss, cfg, run_dir, verbose=False, **kw)


def _codes(run):
    return {f.code for f in run.findings}


def test_named_heads_get_their_metrics_terms_and_gradients(tmp_path):
    run = _fit(tmp_path / "sane")
    assert run.task["name"] == "multitask"
    assert {h: t["name"] for h, t in run.task["heads"].items()} == {
        "cov": "regression",
        "k": "classification",
    }
    last = run.history[-1]
    assert {
        "val_loss",
        "val_cov_loss",
        "val_k_loss",
        "val_cov_rmse",
        "val_cov_r2",
        "val_k_acc",
        "val_k_auc",
    } <= set(last)
    assert last["val_loss"] == pytest.approx(last["val_cov_loss"] + last["val_k_loss"], rel=1e-5)
    assert run.best_epoch == 1 + max(range(len(run.history)), key=lambda i: (run.history[i]["val_k_acc"], -i))
    record = run.steps[-1]
    assert set(record["term_grad"]) == {"cov", "k"} and "cov|k" in record["term_cos"]
    assert record["term_weight"] == {"cov": 1.0, "k": 1.0} and set(record["term_loss"]) == {"cov", "k"}
    assert all("term_grad" in r for r in run.steps)  # one probe per interval
    assert "loss-term-dominates" not in _codes(run)


def test_a_planted_1000x_weight_is_found_dominating(tmp_path):
    run = _fit(tmp_path / "planted", cov_weight=1000.0)
    found = next(f for f in run.findings if f.code == "loss-term-dominates")
    assert "'cov'" in found.message and "weight 1e+03" in found.message


def test_multihead_resume_is_bit_identical(tmp_path):
    straight = _fit(tmp_path / "a")
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path / "b", batch_transform=StopAfter(9))  # in epoch 2
    resumed = _fit(tmp_path / "b", resume="latest")
    a, b = load_checkpoint(tmp_path / "a" / "epoch_003.pt"), load_checkpoint(tmp_path / "b" / "epoch_003.pt")
    for key in ("model", "optimizer", "rng"):
        assert_same(a[key], b[key], key)
    assert without_times(resumed.history) == without_times(straight.history)
    assert resumed.task == straight.task
