"""overfit_batch and find_lr work on copies: the model and optimizer come out bit-identical."""

import copy

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.train.optim import build_optimizer
from tests.helpers import NoisyBlobs, assert_same, small_cnn

BATCH = NoisyBlobs(n=16, augment=False)[0:16]


def snapshot(model, optimizer=None):
    return copy.deepcopy(
        (
            model.state_dict(),
            [p.grad for p in model.parameters()],
            [p.requires_grad for p in model.parameters()],
            model.training,
            optimizer.state_dict() if optimizer is not None else None,
            torch.get_rng_state(),
        )
    )


def test_overfit_batch_passes_on_a_healthy_model_and_leaves_it_untouched():
    model = small_cnn()  # with BatchNorm and Dropout
    model.eval()
    before = snapshot(model)
    rep = nbt.overfit_batch(model, BATCH, nn.CrossEntropyLoss(), steps=40, lr=3e-2)
    assert rep.passed and rep.last_loss <= 0.1 * rep.first_loss and rep.param_drift > 0, rep
    assert rep.steps == 40 and len(rep.losses) == 40 and "PASSED" in str(rep)
    assert_same(before, snapshot(model))


def test_overfit_batch_fails_on_frozen_parameters():
    model = small_cnn()
    model.requires_grad_(False)
    rep = nbt.overfit_batch(model, BATCH, nn.CrossEntropyLoss())
    assert not rep.passed and rep.param_drift == 0.0 and "no trainable parameters" in rep.reason
    # all but the last bias frozen: it moves, but cannot memorise
    model[-1].bias.requires_grad_(True)
    before = snapshot(model)
    rep = nbt.overfit_batch(model, BATCH, nn.CrossEntropyLoss(), steps=30, lr=3e-2)
    assert not rep.passed and rep.param_drift > 0 and "cannot memorise" in rep.reason
    assert_same(before, snapshot(model))


class DeepSupervised(nn.Module):
    """[main, aux]: the aux head sees a constant and cannot be fitted."""

    def __init__(self):
        super().__init__()
        self.body = small_cnn()
        self.aux = nn.Linear(1, 2)

    def forward(self, x):
        return [self.body(x), self.aux(torch.ones(len(x), 1))]


def test_overfit_batch_tests_the_main_output_only_unless_told():
    seen = []

    def loss(out, y):
        seen.append(type(out))
        out = out if isinstance(out, torch.Tensor) else out[0] + out[1]
        return nn.functional.cross_entropy(out, y)

    assert nbt.overfit_batch(DeepSupervised(), BATCH, loss, steps=40, lr=3e-2).passed
    assert set(seen) == {torch.Tensor}
    seen.clear()
    nbt.overfit_batch(DeepSupervised(), BATCH, loss, steps=2, main_only=False)
    assert set(seen) == {list}


def test_overfit_batch_validates_its_arguments():
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        nbt.overfit_batch(small_cnn(), BATCH, nn.CrossEntropyLoss(), steps=0)


def test_find_lr_leaves_model_and_optimizer_bit_identical():
    model = small_cnn()
    opt = build_optimizer(model, nbt.TrainConfig(lr=1e-3, group_lrs={"5": 1e-2}))
    x, y = BATCH
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()  # optimizer state exists and must survive untouched
    before = snapshot(model, opt)
    res = nbt.find_lr(model, NoisyBlobs(n=64), nn.CrossEntropyLoss(), steps=60, optimizer=opt)
    assert_same(before, snapshot(model, opt))
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3]
    assert len(res.lrs) == len(res.losses) == len(res.smoothed) and res.lrs[0] == pytest.approx(1e-7)
    assert res.stopped.startswith(("diverged", "non-finite", "reached"))
    assert res.suggestion is not None and 1e-6 < res.suggestion < 10, res
    assert res.min_loss_lr >= res.suggestion
    fig = res.figure()
    assert len(fig.axes) == 1 and res._repr_png_().startswith(b"\x89PNG")


def test_find_lr_diverges_and_stops_early():
    res = nbt.find_lr(
        small_cnn(), NoisyBlobs(n=64), nn.CrossEntropyLoss(), start_lr=1e-3, end_lr=1e4, steps=80
    )
    assert len(res.lrs) < 80 and res.stopped.startswith(("diverged", "non-finite")), res
    with pytest.raises(ValueError, match="start_lr"):
        nbt.find_lr(small_cnn(), NoisyBlobs(), nn.CrossEntropyLoss(), start_lr=1.0, end_lr=0.1)


def autocast_probe(seen: list) -> nn.Module:
    """small_cnn recording, at each forward, the autocast dtype (None when off). The hook is a
    closure, so the deep copies the diagnostics train record into the same list."""
    model = small_cnn()
    model.register_forward_pre_hook(
        lambda m, args: seen.append(
            torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        )
    )
    return model


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16)])
def test_find_lr_and_the_heatmap_take_fits_precision_path(precision, dtype):
    seen: list = []
    res = nbt.find_lr(
        autocast_probe(seen), NoisyBlobs(n=64), nn.CrossEntropyLoss(), steps=5, precision=precision
    )
    assert len(res.lrs) == 5 and len(seen) == 5 and set(seen) == {dtype}
    seen.clear()
    nbt.viz.grad_heatmap(
        autocast_probe(seen), NoisyBlobs(), nn.CrossEntropyLoss(), steps=3, precision=precision
    )
    assert len(seen) == 3 and set(seen) == {dtype}
