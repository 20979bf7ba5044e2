"""Non-finite steps are skipped with nothing touched, counted, reported, and stop the run when they persist."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.recipes.reproduce import Fp16GradOverflow
from nbtools.step import Precision, train_step
from nbtools.train.optim import build_optimizer
from tests.helpers import NoisyBlobs, assert_same, small_cnn, tiny_fit


class Planted(Dataset):
    """NoisyBlobs with NaN inputs at the given indices."""

    def __init__(self, bad: set[int], n: int = 48):
        self.base, self.bad = NoisyBlobs(n=n, augment=False), bad

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (torch.full_like(x, float("nan")) if i in self.bad else x), y


def _one_step(batch):
    torch.manual_seed(0)
    model = small_cnn()
    cfg = nbt.TrainConfig(lr=1e-2)
    opt = build_optimizer(model, cfg)
    prec = Precision("fp32", torch.device("cpu"))
    x, y = NoisyBlobs(n=8, augment=False)[0:8]
    train_step(model, [(x, y)], nn.CrossEntropyLoss(), opt, prec, 1.0)  # creates optimizer state
    before = copy.deepcopy((model.state_dict(), opt.state_dict()))
    result = train_step(model, [batch], nn.CrossEntropyLoss(), opt, prec, 1.0)
    return before, (model.state_dict(), opt.state_dict()), result


def test_nan_batch_skips_step_and_touches_nothing():
    x, y = NoisyBlobs(n=8, augment=False)[0:8]
    x = x.clone()
    x[3] = float("nan")
    before, after, result = _one_step((x, y))
    assert bool(result.bad)
    # weights, BatchNorm running stats (the NaN forward wrote into them) and optimizer state are untouched
    assert_same(before, after)


def test_good_batch_steps():
    before, after, result = _one_step(NoisyBlobs(n=8, seed=5, augment=False)[0:8])
    assert not bool(result.bad)
    assert not torch.equal(before[0]["5.weight"], after[0]["5.weight"])


class InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_inf_gradient_is_skipped_even_with_a_finite_loss():
    model = nn.Sequential(nn.Linear(4, 2))
    opt = build_optimizer(model, nbt.TrainConfig())
    w = model[0].weight.detach().clone()
    loss_fn = lambda out, y: nn.functional.cross_entropy(InfGrad.apply(out), y)  # noqa: E731
    r = train_step(
        model, [(torch.randn(4, 4), torch.tensor([0, 1, 0, 1]))], loss_fn, opt, Precision("fp32", "cpu"), None
    )
    assert bool(r.bad) and torch.isfinite(r.loss)
    assert torch.equal(w, model[0].weight)
    # the fused optimizer creates its state lazily, at zero: the same as a state that never stepped
    assert all(float(v.abs().sum()) == 0 for state in opt.state.values() for v in state.values())


def test_planted_nan_in_fit_is_counted_with_its_step(tmp_path):
    cfg = nbt.TrainConfig(epochs=2, batch_size=8, log_every=1, checkpoint_every_minutes=None)
    run = tiny_fit(cfg, tmp_path, train=Planted({5}))
    skipped = [s for r in run.steps for s in r["skipped_steps"]]
    assert len(skipped) == 2  # sample 5 lands in one batch per epoch
    assert [h["skipped"] for h in run.history] == [1, 1]
    codes = [f.code for f in run.findings]
    assert codes == ["nonfinite-loss"]
    assert str(skipped[-1]) in run.findings[0].message
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(torch.isfinite(b).all() for b in run.model.buffers() if b.is_floating_point())


def test_persistent_nan_stops_the_run_with_a_diagnosis(tmp_path):
    cfg = nbt.TrainConfig(epochs=3, batch_size=8, log_every=1, max_bad_steps=3, checkpoint_every_minutes=None)
    with pytest.raises(
        nbt.runs.NonFiniteError, match=r"3 optimizer steps in a row.*max_bad_steps=3.*find_nonfinite"
    ) as e:
        tiny_fit(cfg, tmp_path, train=Planted(set(range(48))))
    run = e.value.run
    assert run.steps[-1]["step"] == 3 and run.history == []
    assert (tmp_path / "metrics.json").is_file()


def test_nan_policy_raise_stops_at_the_first_bad_step(tmp_path):
    cfg = nbt.TrainConfig(epochs=1, batch_size=8, nan_policy="raise", checkpoint_every_minutes=None)
    with pytest.raises(nbt.runs.NonFiniteError, match="step 1"):
        tiny_fit(cfg, tmp_path, train=Planted({0, 1, 2, 3, 4, 5, 6, 7} | set(range(48))))


class OverflowNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = small_cnn()

    def forward(self, x):
        return Fp16GradOverflow.apply(self.body(x))


def test_fp16_that_keeps_overflowing_falls_back_to_fp32(tmp_path):
    cfg = nbt.TrainConfig(
        epochs=12, batch_size=8, precision="fp16", log_every=5, checkpoint_every_minutes=None
    )
    run = tiny_fit(cfg, tmp_path, model=OverflowNet())
    amp = [f for f in run.findings if f.code == "amp-skipped-steps"]
    # every step overflows: the monitor acts at the first log interval with >= 25 skips of the last 50
    assert len(amp) == 1 and amp[0].step in range(25, 30), amp
    assert f"switched to fp32 at step {amp[0].step}" in amp[0].message
    assert all(r["skipped"] == r["steps"] for r in run.steps if r["step"] <= amp[0].step)
    assert all(r["skipped"] == 0 for r in run.steps if r["step"] > amp[0].step)  # fp32 steps go through
    assert run.steps[-1]["drift"] > 0
    state = torch.load(tmp_path / "epoch_012.pt", weights_only=True)
    assert state["precision"]["mode"] == "fp32"  # a resumed run stays in fp32
    # steps that were all skipped are the AMP monitor's, not frozen weights; the doctor agrees
    codes = [f.code for f in nbt.doctor(tmp_path)]
    assert codes[0] == "amp-skipped-steps" and "frozen-weights" not in codes, codes


def test_fp16_without_fallback_stops_instead_of_freezing(tmp_path):
    cfg = nbt.TrainConfig(
        epochs=12,
        batch_size=8,
        precision="fp16",
        amp_fallback=False,
        log_every=5,
        checkpoint_every_minutes=None,
    )
    with pytest.raises(nbt.runs.NonFiniteError, match="amp_fallback=True") as e:
        tiny_fit(cfg, tmp_path, model=OverflowNet())
    # the stop is recorded as a finding too, with the way out
    [amp] = e.value.run.findings
    assert (
        amp.code == "amp-skipped-steps"
        and "stopped at step" in amp.message
        and "amp_fallback=True" in amp.fix
    )


def test_bf16_never_uses_a_scaler():
    assert not Precision("bf16", "cpu").scaler.is_enabled() and Precision("fp16", "cpu").scaler.is_enabled()


def test_gradients_left_by_a_step_cut_short_are_not_added_into_the_next():
    """A stop between backward and the optimizer (the stop button, an exception) leaves .grad behind;
    the next train_step clears it first, so a resumed step equals a clean one."""
    x, y = NoisyBlobs(n=8, augment=False)[0:8]
    runs = []
    for leftover in (False, True):
        torch.manual_seed(0)
        model = small_cnn()
        opt = build_optimizer(model, nbt.TrainConfig(lr=1e-2))
        if leftover:  # the interrupted step's gradients (eval: BatchNorm statistics stay as they are)
            nn.CrossEntropyLoss()(model.eval()(x * 3), 1 - y).backward()
            model.train()
        torch.manual_seed(1)  # the same dropout mask either way
        train_step(model, [(x, y)], nn.CrossEntropyLoss(), opt, Precision("fp32", "cpu"), 1.0)
        runs.append(copy.deepcopy(model.state_dict()))
    assert_same(runs[0], runs[1])


def test_a_step_with_a_finite_loss_and_an_infinite_gradient_is_recorded_as_skipped(tmp_path):
    """The records count the steps the device skipped: here every third, for its gradient alone."""
    calls = []

    def loss_fn(out, y):
        calls.append(torch.is_grad_enabled())  # training; the preflight check and validation run without
        out = InfGrad.apply(out) if calls[-1] and sum(calls) % 3 == 0 else out
        return nn.functional.cross_entropy(out, y)

    cfg = nbt.TrainConfig(epochs=1, batch_size=8, log_every=4, checkpoint_every_minutes=None, max_bad_steps=3)
    run = nbt.fit(
        small_cnn(),
        NoisyBlobs(n=48, augment=False),
        NoisyBlobs(seed=1, augment=False),
        loss_fn,
        cfg,
        tmp_path,
        verbose=False,
    )
    assert [s for r in run.steps for s in r["skipped_steps"]] == [3, 6]  # of steps 1-6
    assert sum(r["nonfinite_loss"] for r in run.steps) == 0
    assert all(r["loss"] is not None and r["loss"] == r["loss"] for r in run.steps)
    assert [f.code for f in run.findings if f.code.startswith("nonfinite")] == ["nonfinite-grad"]
