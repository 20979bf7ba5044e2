"""nbt.overfit_batch with a MultiTaskLoss: each head's first and last loss, and which head failed to
fit (seed 002: the total fell, "should be < 0.1", and no head was named)."""

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.losses import MultiTaskLoss
from tests.helpers import assert_same


class CovAndK(nn.Module):
    """A small 3D trunk, a 3x3 'covariance' head and a K head; blind_k feeds the K head a constant, so
    it cannot tell the samples apart (it cannot memorise their labels)."""

    def __init__(self, blind_k=False):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.AdaptiveAvgPool3d(2),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 32), nn.ReLU(),
        )  # fmt: skip
        self.cov, self.k = nn.Linear(32, 9), nn.Linear(32, 4)
        self.blind_k = blind_k

    def forward(self, x):
        z = self.trunk(x)
        return {"cov": self.cov(z).reshape(-1, 3, 3), "k": self.k(torch.ones_like(z) if self.blind_k else z)}


def batch(n=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, 8, generator=g)
    return x, {"cov": torch.randn(n, 3, 3, generator=g), "k": torch.arange(n) % 4}


LOSS = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})


def test_every_head_fits_and_is_reported():
    model = CovAndK()
    before = [p.detach().clone() for p in model.parameters()]
    rep = nbt.overfit_batch(model, batch(), LOSS, steps=80, lr=1e-2)
    assert rep.passed and rep.failed_heads == [], rep.reason
    assert set(rep.heads) == {"cov", "k"} and rep.heads["k"]["weight"] == 0.05
    for h in rep.heads.values():
        assert h["last"] <= 0.1 * h["first"] and len(h["losses"]) == rep.steps
    assert rep.heads["k"]["first"] == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=0.3)
    assert_same(before, [p.detach() for p in model.parameters()])


def test_the_head_that_cannot_fit_is_named():
    rep = nbt.overfit_batch(CovAndK(blind_k=True), batch(), LOSS, steps=80, lr=1e-2)
    assert not rep.passed and rep.failed_heads == ["k"]
    assert rep.last_loss <= 0.1 * rep.first_loss  # the total alone would have passed: cov dominates it
    assert "head(s) 'k' " in rep.reason and "while 'cov' " in rep.reason
    assert "MultiTaskLoss({'k': (loss, 1.0), 'cov': (loss, 0.0)})" in rep.reason
    assert rep.heads["k"]["last"] > 0.5 and rep.heads["cov"]["passed"]


def test_a_watched_head_is_not_judged_and_bad_targets_are_named():
    watched = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.0)})
    rep = nbt.overfit_batch(CovAndK(blind_k=True), batch(), watched, steps=80, lr=1e-2)
    assert rep.passed and set(rep.heads) == {"cov"}
    x, y = batch()
    y["cov"][5, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target of head 'cov' is not finite in sample 5"):
        nbt.overfit_batch(CovAndK(), (x, y), LOSS, steps=2)
    with pytest.raises(ValueError, match="the targets have no 'k'"):
        nbt.overfit_batch(CovAndK(), (x, {"cov": y["cov"]}), LOSS, steps=2)


def test_tuple_outputs_and_targets():
    class Pair(CovAndK):
        def forward(self, x):
            out = super().forward(x)
            return out["cov"], out["k"]

    loss = MultiTaskLoss({0: (nn.MSELoss(), 1.0), 1: (nn.CrossEntropyLoss(), 0.05)})
    x, y = batch()
    rep = nbt.overfit_batch(Pair(), (x, (y["cov"], y["k"])), loss, steps=80, lr=1e-2)
    assert rep.passed and set(rep.heads) == {"0", "1"}
