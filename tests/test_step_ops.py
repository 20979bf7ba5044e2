"""The step costs what a bare step costs (counted in aten ops), and a skipped step still changes nothing."""

import copy
import statistics

import pytest
import torch
from torch import nn
from torch.nn.utils import get_total_norm
from torch.utils.data import DataLoader

import nbtools as nbt
from bench.opcount import OpCounter
from nbtools.recipes.reproduce import Fp16GradOverflow
from nbtools.step import Precision, train_step
from nbtools.step.buffers import BufferGuard
from nbtools.train.loader import TrainBatches
from nbtools.train.optim import build_optimizer
from tests.helpers import assert_same


def _volumes(n=10):
    return nbt.data.SyntheticVolumes(n=n, shape=(16, 16, 16), seed=0)


def _bare_ops(model, data, batch_size=2) -> list[int]:
    """A bare PyTorch loop: forward, backward, clip_grad_norm_, fused AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    with OpCounter() as ops:
        for x, y in DataLoader(data, batch_sampler=TrainBatches(len(data), batch_size, 0, 1)):
            ops.mark()
            loss_fn(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return ops.per_step()


def _fit_ops(model, data, tmp_path, batch_size=2) -> list[int]:
    cfg = nbt.TrainConfig(
        epochs=1, batch_size=batch_size, clip_norm=1.0, log_every=3, checkpoint_every_minutes=None
    )
    with OpCounter() as ops:

        def mark(x, y):
            ops.mark()
            return x, y

        nbt.fit(
            model,
            data,
            _volumes(4),
            nn.CrossEntropyLoss(),
            cfg,
            tmp_path,
            verbose=False,
            batch_transform=mark,
        )
    return ops.per_step()


def test_fit_step_costs_at_most_ten_percent_more_ops_than_a_bare_step(tmp_path):
    data = _volumes()
    bare = _bare_ops(nbt.models.resnet3d(depth=10, width=0.25), data)
    fit = _fit_ops(nbt.models.resnet3d(depth=10, width=0.25), data, tmp_path)
    # the first step of each creates the optimizer state; a later one is the steady state
    ratio = statistics.median(fit[1:]) / statistics.median(bare[1:])
    assert ratio <= 1.10, f"fit's step {fit} ops vs bare {bare}: {ratio:.3f}x"
    # the steps that end a telemetry interval (drift, parameter norm, the one host read) stay cheap too
    assert max(fit[1:]) <= 1.2 * statistics.median(bare[1:]), fit


def test_the_op_count_grows_with_the_model_not_with_its_batchnorm_layers(tmp_path):
    """What fit adds is a fixed number of ops: the same for ResNet-10 and ResNet-18 (twice the BN layers)."""
    data = _volumes(6)
    added = []
    for depth in (10, 18):
        bare = statistics.median(_bare_ops(nbt.models.resnet3d(depth=depth, width=0.25), data)[1:])
        fit = statistics.median(
            _fit_ops(nbt.models.resnet3d(depth=depth, width=0.25), data, tmp_path / str(depth))[1:]
        )
        added.append(fit - bare)
    assert added[0] == added[1], added


def _state(model, opt, prec):
    return copy.deepcopy((model.state_dict(), opt.state_dict(), prec.scaler.state_dict()))


def _step_twice(model, precision, bad_batch, loss_fn=nn.functional.cross_entropy):
    """One good step (creates optimizer state), then `bad_batch`: (state before, after, result)."""
    opt = build_optimizer(model, nbt.TrainConfig(lr=1e-2))
    x, y = next(iter(DataLoader(_volumes(4), batch_size=4)))
    train_step(model, [(x, y)], loss_fn, opt, precision, 1.0)
    before = _state(model, opt, precision)
    result = train_step(model, [bad_batch], loss_fn, opt, precision, 1.0)
    after = _state(model, opt, precision)
    return before, after, result


def test_an_fp16_overflow_skip_leaves_weights_optimizer_and_batchnorm_bit_identical():
    torch.manual_seed(0)
    model = nbt.models.resnet3d(depth=10, width=0.25)
    prec = Precision("fp16", "cpu")  # GradScaler on the CPU, fp16 autocast
    x, y = next(iter(DataLoader(_volumes(4), batch_size=4)))

    def overflowing(out, y):  # gradients overflow while they are fp16
        return nn.functional.cross_entropy(Fp16GradOverflow.apply(out.half()).float(), y)

    before, after, result = _step_twice(model, prec, (x, y), overflowing)
    assert bool(result.bad) and torch.isfinite(result.loss)
    # the forward pass did update BatchNorm's statistics; the skip put them back, bit for bit
    assert_same(before[0], after[0])
    assert_same(before[1], after[1])
    assert after[2]["scale"] < before[2]["scale"]  # and the scaler backed off


def test_a_nan_batch_skip_leaves_everything_bit_identical_and_a_good_step_moves():
    torch.manual_seed(0)
    model = nbt.models.resnet3d(depth=10, width=0.25)
    x, y = next(iter(DataLoader(_volumes(4), batch_size=4)))
    x = x.clone()
    x[1] = float("nan")
    before, after, result = _step_twice(model, Precision("fp32", "cpu"), (x, y))
    assert bool(result.bad)
    assert_same(before, after)
    before, after, result = _step_twice(model, Precision("fp32", "cpu"), (x.nan_to_num(), y))
    assert not bool(result.bad)
    assert not torch.equal(before[0]["bn1.running_mean"], after[0]["bn1.running_mean"])


def test_an_infinite_loss_with_finite_gradients_is_skipped():
    model = nn.Sequential(nn.Linear(4, 2))
    opt = build_optimizer(model, nbt.TrainConfig())
    w = model[0].weight.detach().clone()
    r = train_step(
        model,
        [(torch.randn(4, 4), torch.tensor([0, 1, 0, 1]))],
        lambda out, y: out.sum() * 0 + float("inf"),  # gradients 0, loss inf
        opt,
        Precision("fp32", "cpu"),
        None,
    )
    assert bool(r.bad) and torch.isfinite(r.grad_norm)
    assert torch.equal(w, model[0].weight)


class _EveryKindOfBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)  # running_mean, running_var, num_batches_tracked (0-d int64)
        self.register_buffer("count", torch.tensor(7))
        self.register_buffer("grid", torch.randn(2, 3))
        self.register_buffer("wide", torch.randn(5).double())
        self.register_buffer("transposed", torch.randn(3, 4).t())  # not contiguous: guarded as a copy
        self.register_buffer("whole", torch.randn(6))
        self.register_buffer("part", self.whole[:2])  # a view of another buffer: the link must stay
        self.register_buffer("empty", torch.zeros(0))


def _poison(model):
    """What a NaN forward does to the buffers."""
    with torch.no_grad():
        for b in model.buffers():
            b.copy_(torch.full_like(b, float("nan")) if b.is_floating_point() else b + 1)


@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("bad", [True, False])
def test_a_buffer_guard_puts_back_every_kind_of_buffer_bit_for_bit(bad, flatten):
    torch.manual_seed(0)
    model = _EveryKindOfBuffer()
    original = copy.deepcopy(model.state_dict())
    guard = BufferGuard(model, flatten=flatten)
    assert_same(model.state_dict(), original)  # flattening changes no value, name or shape
    assert model.part.data_ptr() == model.whole.data_ptr()
    saved = guard.snapshot()
    _poison(model)
    poisoned = copy.deepcopy(model.state_dict())
    guard.restore_if(torch.tensor(bad), saved)
    assert_same(model.state_dict(), original if bad else poisoned)
    assert guard.intact()


def test_fit_s_guard_makes_the_plain_buffers_views_of_one_tensor_per_group_and_leaves_the_rest():
    model = _EveryKindOfBuffer()
    before = dict(model.named_buffers())
    guard = BufferGuard(model)
    assert len(guard.flats) == 3  # float32, float64, int64 0-d
    viewed = {n for n, b in model.named_buffers() if any(b._base is f for f in guard.flats)}
    assert viewed == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "count", "grid", "wide"}
    # not contiguous, a view of another buffer and the one it views, empty: guarded as copies, untouched
    assert [len(g) for g in guard.copied] == [4]
    assert all(getattr(model, n) is before[n] for n in ("transposed", "whole", "part", "empty"))
    model.bn(torch.randn(4, 3))  # BatchNorm updates the views in place, so the flat tensor holds it
    flat = model.bn.running_mean._base
    assert torch.equal(flat[model.bn.running_mean.storage_offset() :][:3], model.bn.running_mean)
    again = BufferGuard(model)  # a second fit on the same model flattens the views again
    assert again.intact() and not guard.intact()
    saved = again.snapshot()
    _poison(model)
    again.restore_if(torch.tensor(True), saved)
    assert all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


def test_a_replaced_buffer_is_seen():
    model = nn.BatchNorm1d(3)
    guard = BufferGuard(model)
    assert guard.intact()
    model.running_mean = torch.zeros(3)
    assert not guard.intact()


def test_group_norms_are_each_groups_gradient_norm_and_the_total_is_clip_grad_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    cfg = nbt.TrainConfig(group_lrs={"0": 1e-3})
    opt = build_optimizer(model, cfg)
    r = train_step(
        model,
        [(torch.randn(6, 4), torch.tensor([0, 1] * 3))],
        nn.CrossEntropyLoss(),
        opt,
        Precision("fp32", "cpu"),
        None,
    )
    expected = [get_total_norm([p.grad for p in g["params"]]) for g in opt.param_groups]
    assert [float(n) for n in r.group_norms] == pytest.approx([float(e) for e in expected], rel=1e-6)
    assert float(r.grad_norm) == float(get_total_norm([p.grad for p in model.parameters()]))


def test_the_interval_record_gives_the_drift_and_size_of_every_parameter():
    """Drift and parameter norm against a direct computation, over parameters of two dtypes and a
    channels_last weight, with the snapshot refilled for the next interval."""
    from nbtools.step import StepResult
    from nbtools.train.telemetry import Telemetry

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    model[0].to(memory_format=torch.channels_last)
    model[2].double()
    telemetry = Telemetry(["all"])
    telemetry.start_interval(model)

    def moved_interval():
        start = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        one = torch.tensor(1.0)
        telemetry.record(StepResult(one, torch.tensor(False), one, [one]))
        record = telemetry.flush(0, 1, [1e-3], None)
        now = list(model.parameters())
        drift = torch.stack([torch.linalg.vector_norm(p.double() - s.double()) for p, s in zip(now, start)])
        size = torch.stack([torch.linalg.vector_norm(p.double()) for p in now])
        return record, torch.linalg.vector_norm(drift).item(), torch.linalg.vector_norm(size).item()

    for _ in range(2):  # the second interval measures from the refilled snapshot
        record, drift, size = moved_interval()
        assert record["drift"] == pytest.approx(drift, rel=1e-6)
        assert record["param_norm"] == pytest.approx(size, rel=1e-6)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)  # the model is untouched


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1e9])
def test_the_step_clips_every_group_by_the_total_norm_as_clip_grad_norm_does(max_norm):
    """The gradients a step leaves are, bit for bit, its unclipped ones through
    torch.nn.utils.clip_grad_norm_: every parameter group scaled by the one total norm."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    clipped = copy.deepcopy(model)
    batch = [(torch.randn(6, 4), torch.tensor([0, 1] * 3))]
    cfg = nbt.TrainConfig(group_lrs={"0": 1e-3})  # two groups: "0" and "default"
    for m, clip in ((model, None), (clipped, max_norm)):
        train_step(m, batch, nn.CrossEntropyLoss(), build_optimizer(m, cfg), Precision("fp32", "cpu"), clip)
    unclipped = [p.grad.clone() for p in model.parameters()]
    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    assert_same([p.grad for p in clipped.parameters()], [p.grad for p in model.parameters()])
    changed = [not torch.equal(a, p.grad) for a, p in zip(unclipped, clipped.parameters())]
    assert changed == [bool(total > max_norm)] * 4, (float(total), changed)
