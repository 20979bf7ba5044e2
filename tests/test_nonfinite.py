"""find_nonfinite names the first module that goes non-finite, and leaves the model as it was."""

import copy

import torch
from torch import nn

import nbtools as nbt
from nbtools.diagnose import nonfinite_report
from tests.helpers import assert_same


class EmitNaN(nn.Module):
    def forward(self, x):
        return x * float("nan")


class InfGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class InfGrad(nn.Module):
    """Finite forward, non-finite backward: the gradient w.r.t. its input is inf."""

    def forward(self, x):
        return InfGradFn.apply(x)


def net(middle: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Linear(8, 8), middle, nn.ReLU(inplace=True)),
        nn.Linear(8, 2),
    )


BATCH = (torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 0, 1, 1, 0]))


def test_names_the_module_that_emits_nan_in_forward():
    assert nbt.find_nonfinite(net(EmitNaN()), BATCH, nn.CrossEntropyLoss()) == "2.1"
    rep = nonfinite_report(net(EmitNaN()), BATCH, nn.CrossEntropyLoss())
    assert rep.where == "forward" and rep.module == "2.1" and "EmitNaN" in rep.detail and rep
    assert "48 of 48" in str(rep)


def test_names_the_module_whose_backward_goes_non_finite():
    rep = nonfinite_report(net(InfGrad()), BATCH, nn.CrossEntropyLoss())
    assert (rep.where, rep.module) == ("backward", "2.1"), rep
    # the first module of the model: its input gradient is watched too
    first = nn.Sequential(InfGrad(), nn.Linear(4, 2))
    assert nbt.find_nonfinite(first, BATCH, nn.CrossEntropyLoss()) == "0"


def test_a_nan_input_is_named_before_any_module():
    x = BATCH[0].clone()
    x[2, 1] = float("nan")
    rep = nonfinite_report(net(nn.Identity()), (x, BATCH[1]), nn.CrossEntropyLoss())
    assert rep.name == "input" and rep.where == "input" and rep.module is None
    assert "1 of 24 values non-finite (nan 1, inf 0)" in rep.detail
    y = torch.tensor([0.0, 1.0, float("inf"), 0.0, 1.0, 0.0])
    assert nbt.find_nonfinite(net(nn.Identity()), (BATCH[0], y), lambda o, t: o.sum() * t.sum()) == "target"


def test_the_loss_itself():
    def overflowing(out, y):  # the seed-001 log(cosh(x)) written naively
        return torch.log(torch.cosh(out * 1e3)).mean()

    assert nbt.find_nonfinite(net(nn.Identity()), BATCH, overflowing) == "loss"
    sqrt_at_zero = lambda out, y: (out - out).sqrt().sum()  # noqa: E731  finite loss, inf gradient
    rep = nonfinite_report(net(nn.Identity()), BATCH, sqrt_at_zero)
    assert (rep.where, rep.name) == ("loss", "loss") and "backward" in rep.detail


def test_all_finite_is_none_and_falsy():
    rep = nonfinite_report(net(nn.Identity()), BATCH, nn.CrossEntropyLoss())
    assert not rep and rep.name is None and str(rep).startswith("everything finite")
    assert nbt.find_nonfinite(net(nn.Identity()), BATCH, nn.CrossEntropyLoss()) is None


def test_resnet3d_deep_layer_and_the_model_is_untouched():
    model = nbt.models.resnet3d(depth=10, width=0.25)
    with torch.no_grad():
        model.layer3[0].bn2.weight[3] = float("inf")
    model.train()
    x, y = torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])
    model(x).sum().backward()  # existing .grad must survive
    before = copy.deepcopy((model.state_dict(), [p.grad for p in model.parameters()]))
    rng = torch.get_rng_state()
    assert nbt.find_nonfinite(model, (x, y), nn.CrossEntropyLoss()) == "layer3.0.bn2"
    assert_same(before, (model.state_dict(), [p.grad for p in model.parameters()]))
    assert model.training and torch.equal(rng, torch.get_rng_state())
    model.eval()
    assert nbt.find_nonfinite(model, (x, y), nn.CrossEntropyLoss()) == "layer3.0.bn2"
    assert not model.training
