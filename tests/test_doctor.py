"""Each finding provoked on purpose in a tiny fit, live in run.findings and again from the run folder."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.cli import main as cli
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit


def train(tmp_path, model=None, data=None, **cfg):
    cfg = {"epochs": 2, "batch_size": 8, "checkpoint_every_minutes": None, **cfg}
    return tiny_fit(nbt.TrainConfig(**cfg), tmp_path, model=model or small_cnn(), train=data or NoisyBlobs())


def codes(findings):
    return [f.code for f in findings]


def test_a_healthy_run_raises_no_finding(tmp_path):
    run = train(tmp_path, epochs=4, lr=3e-2)
    assert run.history[-1]["val_auc"] > 0.9  # it did learn
    assert run.findings == [] and nbt.doctor(tmp_path) == []
    assert cli(["doctor", str(tmp_path)]) == 0
    assert cli(["doctor", str(tmp_path / "no-such-run")]) == 2


def test_frozen_weights_behind_an_ema(tmp_path, capsys):
    # an LR far below float32 resolution: every step is taken, not one weight changes (seed 002); the
    # EMA copy would look alive, the drift is read on the model
    run = train(tmp_path, lr=1e-30, ema_decay=0.9, log_every=2)
    frozen = [f for f in run.findings if f.code == "frozen-weights"]
    assert len(frozen) == 1 and "steps 1-" in frozen[0].message and "(lr default 1e-3" in frozen[0].message
    assert all(r["skipped"] == 0 for r in run.steps)
    # the doctor re-derives the same finding from metrics.json, and the CLI exits 1 with it printed
    assert nbt.doctor(tmp_path) == run.findings
    assert cli(["doctor", str(tmp_path)]) == 1
    assert "[frozen-weights]" in capsys.readouterr().out


class Constant(nn.Module):
    """Ignores its input: predicts the majority class for every sample."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, x):
        return self.bias.expand(len(x), 2)


def test_class_collapse_from_a_constant_model(tmp_path):
    run = train(tmp_path, model=Constant(), epochs=3, lr=1e-2)
    collapse = [f for f in run.findings if f.code == "class-collapse"]
    assert collapse and "100% of validation predictions are class 0" in collapse[0].message
    assert [h["val_pred_pos_rate"] for h in run.history] == [0.0, 0.0, 0.0]
    assert nbt.doctor(run) == run.findings


def test_lr_of_10_is_caught(tmp_path):
    try:
        run = train(tmp_path, lr=10.0, log_every=1, optimizer="sgd", momentum=0.0)
    except nbt.runs.NonFiniteError as e:  # an LR of 10 may also end in non-finite steps
        run = e.run
    assert {"lr-too-high", "exploding-gradients"} & set(codes(run.findings)), run.findings


class Scaled(Dataset):
    def __init__(self, factor):
        self.base, self.factor = NoisyBlobs(augment=False), factor

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x * self.factor, y


def test_input_out_of_range_on_the_first_batch(tmp_path):
    run = train(tmp_path, data=Scaled(255.0), epochs=1)
    f = run.findings[0]
    assert f.code == "input-out-of-range" and f.step == 1 and "(8, 1, 8, 8)" in f.message
    assert nbt.doctor(tmp_path)[0] == f  # only fit sees the batch: the doctor keeps the saved finding


class EmitNaN(nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_a_stop_on_non_finite_steps_names_the_module(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), EmitNaN(), nn.Flatten(), nn.Linear(144, 2)
    )
    with pytest.raises(
        nbt.runs.NonFiniteError, match=r"in a row.*First non-finite.*forward: 2: EmitNaN"
    ) as e:
        train(tmp_path, model=model, max_bad_steps=3, log_every=1)
    finding = e.value.run.findings[0]
    assert finding.code == "nonfinite-loss" and "first non-finite: forward: 2: EmitNaN" in finding.message
    assert nbt.doctor(tmp_path) == e.value.run.findings


def test_the_rules_cost_little_per_interval(tmp_path):
    """fit calls the step rules at every log interval: keep them cheap on a long run's telemetry."""
    import time

    from nbtools.diagnose import rules
    from tests.test_rules import make_run, step

    run = make_run(
        tmp_path, [step(i, epoch=1 + i // 100, loss=0.5, grad=1.0 + 0.1 * (i % 7)) for i in range(1, 4001)]
    )
    # CPU time, not wall time: on a busy machine this process waits for a core, it does no more work.
    # 4000 intervals = 40,000 steps: 4-6 ms of CPU on this 2-core machine; the bound holds at 40x that and
    # still fails a rule that rescans the record at every interval (quadratic: tens of seconds here).
    t0 = time.process_time()
    rules.step_findings(run)
    assert time.process_time() - t0 < 0.25


def test_an_lr_that_explodes_within_the_first_interval_is_caught(tmp_path):
    # Adam at lr 10: the first interval's mean loss is already hundreds of times the chance level, so
    # nothing "rises" after it; against the chance level (ln 2) and the first step's loss it is plain
    run = train(tmp_path, lr=10.0, epochs=3, log_every=3)
    assert run.task["outputs"] == 2 and run.task["chance_loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert run.steps[0]["loss"] > 100 * math.log(2) and run.steps[0]["loss_first"] < 2 * math.log(2)
    [lr] = [f for f in run.findings if f.code == "lr-too-high"]
    peak = max(r["loss"] for r in run.steps[:6] if r["loss"] is not None)
    assert (
        f"reached {peak:.3g}" in lr.message
        and "the chance level 0.693 (uniform logits over 2 outputs)" in lr.message
    )
    assert f"the first step's loss {run.steps[0]['loss_first']:.3g}" in lr.message
    assert nbt.doctor(tmp_path) == nbt.runs.open_first(run.findings)


def test_the_chance_level_of_one_logit_is_the_priors_loss(tmp_path):
    from torch.utils.data import TensorDataset

    from nbtools.diagnose.chance import task_record

    y = (torch.arange(40) % 4 == 0).float()  # positive rate 0.25
    p = 0.25
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    data = TensorDataset(torch.zeros(40, 3), y)
    task = task_record(torch.zeros(8), nn.BCEWithLogitsLoss(), data, y[:8])
    assert task == {
        "outputs": 1,
        "pos_rate": 0.25,
        "chance_loss": pytest.approx(entropy),
        "labels": "dataset",
    }
    focal = nbt.losses.FocalLoss(gamma=2.0, alpha=0.25)
    logit = torch.full((40, 1), math.log(p / (1 - p)))
    want = float(focal(logit, y.long()))
    assert task_record(torch.zeros(8, 1), focal, data, y[:8].long())["chance_loss"] == pytest.approx(want)
    # a model of 2 outputs trained with cross-entropy: ln 2, whatever the prior
    ce = task_record(torch.zeros(8, 2), nn.CrossEntropyLoss(), data, y[:8].long())
    assert ce["chance_loss"] == pytest.approx(math.log(2)) and ce["pos_rate"] == 0.25


def test_overfitting_names_the_epoch_best_pt_really_holds(tmp_path):
    # 24 noisy training samples memorised: val loss is lowest at epoch 1, val_acc best at epoch 4
    g = torch.Generator().manual_seed(3)
    torch.rand(16, generator=g)
    base = NoisyBlobs(n=24, seed=4, augment=False)
    y = base.y.clone()
    flip = torch.rand(24, generator=g) < 0.3
    y[flip] = 1 - y[flip]
    from torch.utils.data import TensorDataset

    run = train(tmp_path, data=TensorDataset(base.x, y), epochs=10, lr=3e-2, monitor="val_acc", log_every=2)
    losses = [h["val_loss"] for h in run.history]
    lowest = 1 + losses.index(min(losses))
    assert (lowest, run.best_epoch) == (1, 4)  # the two disagree, as they may
    assert torch.load(tmp_path / "best_val.pt", weights_only=True)["epoch"] == run.best_epoch
    [over] = [f for f in run.findings if f.code == "overfitting"]
    assert "best.pt holds epoch 4 (the best val_acc), not the val-loss minimum at epoch 1" in over.fix
    assert "best.pt (epoch 1" not in over.fix
