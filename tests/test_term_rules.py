"""`loss-term-dominates` and `loss-terms-conflict` on telemetry from real two-head training (plain torch
loops probed with TermGradProbe at each interval): a planted 1000x weight, a sane run, an opposed pair."""

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.diagnose import rules
from nbtools.losses import MultiTaskLoss
from nbtools.runs import Run
from nbtools.step.term_grads import TermGradProbe
from tests.test_rules import step as base_record


class TwoHeads(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool3d(2), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
        )  # fmt: skip
        self.cov, self.k = nn.Linear(16, 4), nn.Linear(16, 3)

    def forward(self, x):
        z = self.trunk(x)
        return {"cov": self.cov(z).reshape(-1, 2, 2), "k": self.k(z)}


def seed002_like(n=64, seed=0):
    """Volumes whose octant means set a 2x2 'covariance' (standardised) and a 3-class 'K'."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, 8, generator=g)
    octants = nn.functional.adaptive_avg_pool3d(x, 2).reshape(n, 8) * 4
    cov = torch.stack([octants[:, 0], octants[:, 1] + octants[:, 2], octants[:, 1], octants[:, 3]], 1)
    k = (octants[:, 4] > 0.5).long() + (octants[:, 5] > 0.5).long()
    return x, {"cov": ((cov - cov.mean(0)) / cov.std(0)).reshape(n, 2, 2), "k": k}


def probed_run(tmp_path, loss_fn, model, data, steps=60, log_every=5, lr=3e-3):
    """Train with Adam in a plain loop; probe the first step of each interval, record what fit will."""
    x, y = data
    probe, opt = TermGradProbe(model), torch.optim.Adam(model.parameters(), lr=lr)
    records, sums = [], {}
    for i in range(steps):
        j = (i * 16) % len(x)
        xb, yb = x[j : j + 16], {k: v[j : j + 16] for k, v in y.items()}
        opt.zero_grad()
        total, terms = loss_fn.with_terms(model(xb), yb)
        if i % log_every == 0:
            found = probe({n: terms[n] for n in loss_fn.names})
        for n in loss_fn.names:
            sums[n] = sums.get(n, 0.0) + terms[f"{n}.raw"].detach()
        total.backward()
        opt.step()
        if (i + 1) % log_every == 0:
            rec = {"epoch": 1 + i // 20, "step": i + 1, "steps": log_every, **found.record(loss_fn.weights)}
            rec["term_loss"] = {n: float(s) / log_every for n, s in sums.items()}
            records.append(rec)
            sums = {}
    return Run(tmp_path, nbt.TrainConfig(), steps=records)


def test_a_planted_1000x_weight_dominates_and_the_balancing_weight_is_named(tmp_path):
    loss_fn = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 1000.0)})
    run = probed_run(tmp_path, loss_fn, TwoHeads(), seed002_like(), steps=20, lr=1e-4)
    f = rules.loss_term_dominates(run)
    assert f is not None and f.code == "loss-term-dominates", run.steps
    assert "term 'k' (weight 1e+03)" in f.message and "next, 'cov' (weight 1)" in f.message
    ratio = run.steps[0]["term_grad"]["k"] / run.steps[0]["term_grad"]["cov"]
    assert ratio > 100
    balance = float(f.fix.split("to about ")[1].split(" ")[0])
    assert 0.5 < balance * ratio / 1000 < 2  # brings k's gradient to about cov's
    assert rules.loss_terms_conflict(run) is None
    assert f.is_open


def test_a_sane_two_head_run_raises_neither(tmp_path):
    loss_fn = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 1.0)})
    run = probed_run(tmp_path, loss_fn, TwoHeads(), seed002_like())
    assert run.steps[-1]["term_loss"]["cov"] < run.steps[0]["term_loss"]["cov"]  # it learns
    assert rules.loss_term_dominates(run) is None, [r["term_grad"] for r in run.steps]
    assert rules.loss_terms_conflict(run) is None, [r["term_cos"] for r in run.steps]


class Opposed(nn.Module):
    """Two heads read the trunk's output as it is, and are asked for t and -t: what one learns the other
    undoes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(512, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        z = self.trunk(x)
        return {"a": z.reshape(-1, 2, 2), "b": z.reshape(-1, 2, 2)}


def test_an_opposed_pair_conflicts(tmp_path):
    x, y = seed002_like()
    data = (x, {"a": y["cov"], "b": -y["cov"]})
    loss_fn = MultiTaskLoss({"a": (nn.MSELoss(), 1.0), "b": (nn.MSELoss(), 1.0)})
    run = probed_run(tmp_path, loss_fn, Opposed(), data)
    f = rules.loss_terms_conflict(run)
    assert f is not None and "'a' and 'b' pull the shared parameters" in f.message and f.is_open
    assert len(run.steps) == 12 and all(r["term_cos"]["a|b"] < -0.9 for r in run.steps[-8:])
    assert rules.loss_term_dominates(run) is None


def record(i, grads, cos=None, weights=None, loss=None):
    r = base_record(i)
    r |= {
        "term_grad": grads,
        "term_weight": weights or dict.fromkeys(grads, 1.0),
        "term_params": "last: trunk.4",
    }
    r["term_cos"] = {"a|b": cos} if cos is not None else {}
    if loss is not None:
        r["term_loss"] = loss
    return r


def test_status_one_interval_is_not_enough_and_fitted_heads_are_not_drowned(tmp_path):
    def run(records):
        return Run(tmp_path, nbt.TrainConfig(), steps=records)

    spike = [
        record(1, {"a": 1.0, "b": 1.0}),
        record(2, {"a": 50.0, "b": 1.0}),
        record(3, {"a": 1.0, "b": 1.0}),
    ]
    assert rules.loss_term_dominates(run(spike)) is None  # a single odd batch
    drowned = [record(i, {"a": 50.0, "b": 1.0}) for i in range(1, 4)] + [record(4, {"a": 2.0, "b": 1.0})]
    f = rules.loss_term_dominates(run(drowned))
    assert f is not None and not f.is_open and f.resolved_epoch == 1
    assert "about 0.02" in f.fix and "50x" in f.message
    fitted = [
        record(i, {"a": 50.0, "b": 1.0}, loss={"a": 1.0, "b": 2.0 if i == 1 else 0.1}) for i in range(1, 5)
    ]
    assert rules.loss_term_dominates(run(fitted)) is None  # b fitted (loss / 20): its gradient vanished
    three = [
        record(i, {"a": 50.0, "b": 1.0, "c": 2.0}, loss={"a": 1.0, "b": 2.0 if i == 1 else 0.1, "c": 1.0})
        for i in range(1, 5)
    ]
    f = rules.loss_term_dominates(run(three))  # b fitted, c is still drowned
    assert f is not None and "next, 'c'" in f.message and "25x" in f.message
    watched = [record(i, {"a": 50.0, "b": 0.0}, weights={"a": 1.0, "b": 0.0}) for i in range(1, 4)]
    assert rules.loss_term_dominates(run(watched)) is None  # weight 0: watched, not trained
    noisy = [record(i, {"a": 1.0, "b": 1.0}, cos=-0.9 if i % 3 else 0.1) for i in range(1, 31)]
    assert rules.loss_terms_conflict(run(noisy)) is None  # 2 of 3 below: never 8 of 10
    mostly = [record(i, {"a": 1.0, "b": 1.0}, cos=0.1 if i in (3, 7) else -0.8) for i in range(1, 11)]
    f = rules.loss_terms_conflict(run(mostly))
    assert f is not None and f.is_open and "below -0.3 in 8 of 10 consecutive intervals" in f.message
    assert "(median -0.80)" in f.message and f.step == 100
    gone = mostly + [record(i, {"a": 1.0, "b": 1.0}, cos=0.2) for i in range(11, 14)]
    f = rules.loss_terms_conflict(run(gone))
    assert not f.is_open and f.resolved_epoch == 1


def test_the_doctor_runs_them_with_the_other_step_rules(tmp_path):
    records = [record(i, {"a": 50.0, "b": 1.0}, cos=-0.9) for i in range(1, 11)]
    found = {f.code for f in rules.step_findings(Run(tmp_path, nbt.TrainConfig(), steps=records))}
    assert {"loss-term-dominates", "loss-terms-conflict"} <= found
    plain = [base_record(i) for i in range(1, 5)]  # a single-loss run has no term fields
    assert not {"loss-term-dominates", "loss-terms-conflict"} & {
        f.code for f in nbt.doctor(Run(tmp_path, nbt.TrainConfig(), steps=plain))
    }


@pytest.mark.parametrize("code", ["loss-term-dominates", "loss-terms-conflict"])
def test_codes_are_registered(code):
    assert code in rules.CODES.values()
