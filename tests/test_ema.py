"""EMA: timm-style warm-up, and a skipped step leaves the EMA untouched (issue 14, item 9)."""

import torch
from torch import nn

import nbtools as nbt
from bench.opcount import OpCounter
from nbtools.train.ema import build_ema, ema_pairs, update_ema
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit


def _reference(decay: float, init: float, values: list[float], skipped: list[bool]) -> float:
    """The EMA of one scalar by hand: update n (skips excluded) uses min(decay, (1 + n) / (10 + n))."""
    ema, n = init, 0
    for v, skip in zip(values, skipped):
        if skip:
            continue
        d = min(decay, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * v
        n += 1
    return ema


def test_warm_up_and_skipped_steps_match_the_formula():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = build_ema(model, 0.999)
    values = [float(v) for v in torch.linspace(1.0, 3.0, 30)]
    skipped = [i % 7 == 3 for i in range(30)]
    for v, skip in zip(values, skipped):
        with torch.no_grad():
            model.weight.fill_(v)
        update_ema(ema, model, torch.tensor(skip))
    want = _reference(0.999, 0.0, values, skipped)
    got = ema.module.weight.item()
    assert abs(got - want) < 1e-6, (got, want)
    assert int(ema.n_averaged) == skipped.count(False)
    # without the warm-up, 26 updates at 0.999 would leave the EMA at about 2.5 % of the values
    assert got > 0.5 * values[-1]


def test_a_skipped_step_leaves_the_ema_bit_identical():
    model = small_cnn()
    ema = build_ema(model, 0.9)
    update_ema(ema, model, torch.tensor(False))
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the model moved, but the step is reported skipped
    update_ema(ema, model, torch.tensor(True))
    after = ema.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_fit_skips_the_ema_update_on_a_nan_batch(tmp_path):
    calls = {"n": 0}

    def plant_nan(x, y):
        calls["n"] += 1
        if calls["n"] == 3:
            x = x.clone()
            x[0] = float("nan")
        return x, y

    cfg = nbt.TrainConfig(epochs=1, batch_size=8, lr=1e-2, ema_decay=0.99, log_every=1, precision="fp32")
    run = tiny_fit(
        cfg, tmp_path / "r", train=NoisyBlobs(48), val=NoisyBlobs(16, seed=1), batch_transform=plant_nan
    )
    state = torch.load(tmp_path / "r" / "epoch_001.pt", weights_only=True)
    steps = state["step"]
    assert sum(r["skipped"] for r in run.steps) == 1
    assert int(state["ema"]["n_averaged"]) == steps - 1


def test_the_update_reads_nothing_back_to_the_host():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    model = small_cnn()
    ema = build_ema(model, 0.999)
    with Ops() as ops:
        update_ema(ema, model, torch.tensor(False))
    assert not [n for n in ops.names if "local_scalar_dense" in n or "item" in n], ops.names


def test_the_update_is_a_fixed_handful_of_ops_at_any_depth():
    """Multi-tensor ops over pairs made once: ResNet-50-3D's 53 BatchNorm counters and ~320 tensors cost
    the update no more ops than ResNet-10-3D's (it was a detach per tensor and a copy per counter)."""
    counts = []
    for depth in (10, 50):
        model = nbt.models.resnet3d(depth=depth, width=0.125)
        ema = build_ema(model, 0.99)
        pairs = ema_pairs(ema, model)
        update_ema(ema, model, torch.tensor(False), pairs)
        with OpCounter() as ops:
            ops.mark()
            update_ema(ema, model, torch.tensor(False), pairs)
            ops.mark()
        counts += ops.per_step()
    assert counts[0] == counts[1] <= 12, counts
