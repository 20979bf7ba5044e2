"""Regression metrics against scikit-learn, batch by batch, at offsets that catch cancellation; the
constant-target flag; the chance reference; the shape check torch does not make."""

import math

import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from torch import nn

from nbtools.tasks.regression import (
    MONITOR,
    RegressionAccumulator,
    chance_loss,
    check_pair,
    monitor_mode,
    output_names,
)
from nbtools.tasks.target_scaling import TargetScaler


def data(n, shape, offset, seed=0, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    y = offset + torch.randn(n, *shape, generator=g, dtype=torch.float64) * 3.0
    p = y + noise * torch.randn(n, *shape, generator=g, dtype=torch.float64)
    return p.float(), y.float()  # float32, as a model gives them; sklearn sees the same values


def accumulate(acc, p, y, batch=7):
    for i in range(0, len(y), batch):
        acc.update(p[i : i + batch], y[i : i + batch])
    return acc.compute()


def sk(p, y):
    p2, y2 = p.double().reshape(len(y), -1).numpy(), y.double().reshape(len(y), -1).numpy()
    return {
        "val_mae": mean_absolute_error(y2, p2),
        "val_rmse": root_mean_squared_error(y2, p2),
        "val_r2": r2_score(y2, p2),
        "mae": mean_absolute_error(y2, p2, multioutput="raw_values"),
        "rmse": root_mean_squared_error(y2, p2, multioutput="raw_values"),
        "r2": r2_score(y2, p2, multioutput="raw_values"),
    }


@pytest.mark.parametrize("shape", [(), (1,), (4,), (3, 3)])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_metrics_agree_with_scikit_learn(shape, offset):
    p, y = data(53, shape, offset)
    got, ref = accumulate(RegressionAccumulator(), p, y), sk(p, y)
    for name in ("val_mae", "val_rmse", "val_r2"):
        assert got[name] == pytest.approx(ref[name], rel=1e-6, abs=1e-9), name
    assert got["val_r2_undefined"] == 0
    k = math.prod(shape)
    per_output = {key for key in got if key.count("_") >= 2 and key != "val_r2_undefined"}
    if 1 < k <= 8:
        names = output_names(None, shape)
        for metric in ("mae", "rmse", "r2"):
            for j, name in enumerate(names):
                assert got[f"val_{metric}_{name}"] == pytest.approx(ref[metric][j], rel=1e-6, abs=1e-9)
        assert len(per_output) == 3 * k
    else:
        assert not per_output  # a scalar is its own average; 9 outputs are too many to list


def test_float64_sums_survive_an_offset_that_naive_float32_does_not():
    # the spread (0.1) is 1e-5 of the offset: a float32 sum of squares (~4e10, ulp ~4e3) loses it
    g = torch.Generator().manual_seed(3)
    y = 1e4 + 0.1 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    p = y + 0.02 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    got, ref = accumulate(RegressionAccumulator(), p, y, batch=32), sk(p, y)
    assert got["val_r2"] == pytest.approx(ref["val_r2"], rel=1e-6)
    naive = (y.float() ** 2).sum(0) - y.float().sum(0) ** 2 / len(y)
    assert not torch.allclose(naive.double(), ((y - y.mean(0)) ** 2).sum(0), rtol=0.5)


def test_standardised_inputs_are_reported_in_user_units():
    p, y = data(40, (3,), 500.0, seed=1)
    scaler = TargetScaler((499.0, 501.0, 510.0), (2.0, 4.0, 0.5), (3,), n=100)
    acc = RegressionAccumulator(scaler)
    got = accumulate(acc, scaler.standardise(p), scaler.standardise(y))
    ref = sk(p, y)
    for name in ("val_mae", "val_rmse", "val_r2"):
        assert got[name] == pytest.approx(ref[name], rel=1e-6)
    assert acc.per_output["mean"] == pytest.approx(y.double().mean(0).numpy(), rel=1e-9)


def test_totals_of_several_ranks_add_up_with_a_scaler():
    p, y = data(40, (3,), 1e4, seed=5)
    scaler = TargetScaler((1e4 + 1, 1e4 - 1, 1e4), (3.0, 3.0, 3.0), (3,), n=100)
    whole, halves = RegressionAccumulator(scaler), [RegressionAccumulator(scaler) for _ in range(2)]
    z, zp = scaler.standardise(y), scaler.standardise(p)
    accumulate(whole, zp, z)
    halves[0].update(zp[:13], z[:13])  # rank 0
    halves[1].update(zp[13:], z[13:])  # rank 1
    gathered = halves[0].compute(totals=halves[0].totals() + halves[1].totals())  # what all_reduce gives
    assert gathered == pytest.approx(whole.compute(), rel=1e-9)
    with pytest.raises(ValueError, match="need a common shift: give the accumulator the scaler"):
        RegressionAccumulator().compute(totals=halves[0].totals())


def test_named_outputs_and_a_constant_target_is_said_not_scored(caplog):
    p, y = data(30, (3,), 10.0, seed=2)
    y[:, 1] = 7.25  # constant over the validation set: no R^2 (scikit-learn: 0.0 here, silently)
    acc = RegressionAccumulator(names=["age", "grey matter", "icv"])
    got = accumulate(acc, p, y)
    assert math.isnan(got["val_r2_grey_matter"]) and got["val_r2_undefined"] == 1
    assert acc.undefined == ["grey_matter"] and "grey_matter" in caplog.text
    defined = [0, 2]
    ref = r2_score(y[:, defined].numpy(), p[:, defined].numpy())
    assert got["val_r2"] == pytest.approx(ref, rel=1e-6)  # the mean over outputs that have one
    assert got["val_mae_grey_matter"] == pytest.approx(mean_absolute_error(y[:, 1], p[:, 1]), rel=1e-6)
    all_constant = RegressionAccumulator()
    all_constant.update(torch.ones(4, 1), torch.full((4, 1), 3.0))
    out = all_constant.compute()
    assert math.isnan(out["val_r2"]) and out["val_r2_undefined"] == 1


def test_bad_names_and_empty_pass_are_refused():
    with pytest.raises(ValueError, match="names has 2 entries for 3 outputs"):
        RegressionAccumulator(names=["a", "b"]).update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"rename \['a_b'\]"):
        output_names(["a b", "a-b"], (2,))
    with pytest.raises(ValueError, match="no validation samples"):
        RegressionAccumulator().compute()
    with pytest.raises(ValueError, match="standardised=True needs"):
        RegressionAccumulator(standardised=True)


@pytest.mark.parametrize(
    "loss_fn", [nn.MSELoss(), nn.L1Loss(), nn.HuberLoss(delta=0.7), nn.SmoothL1Loss(beta=0.5)]
)
@pytest.mark.parametrize("standardised", [True, False])
def test_chance_loss_is_the_loss_of_predicting_the_training_mean(loss_fn, standardised):
    _, y = data(50, (2,), 100.0, seed=4)
    scaler = TargetScaler((99.0, 102.0), (2.5, 4.0), (2,), n=200)
    mean = torch.tensor(scaler.mean).expand_as(y)
    if standardised:
        direct = loss_fn(torch.zeros_like(y), scaler.standardise(y)).item()
        feed = scaler.standardise(y)
    else:
        direct = loss_fn(mean, y).item()
        feed = y
    acc = RegressionAccumulator(scaler, standardised=standardised, loss_fn=loss_fn)
    accumulate(acc, torch.zeros_like(feed), feed)
    assert acc.chance_loss == pytest.approx(direct, rel=1e-5)
    assert chance_loss(loss_fn, y, scaler, standardised) == pytest.approx(direct, rel=1e-5)
    assert RegressionAccumulator(loss_fn=loss_fn).chance_loss is None  # no training mean: no reference
    assert chance_loss(nn.MSELoss(reduction="sum"), y, scaler) is None


def test_update_keeps_sums_on_the_device_and_compute_reads_once(monkeypatch):
    reads = []
    for name in ("item", "cpu", "tolist", "__float__", "__bool__", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda *a, _o=original, _n=name, **k: (reads.append(_n), _o(*a, **k))[1]
        )
    p, y = data(64, (3,), 5.0)
    acc = RegressionAccumulator(TargetScaler((5.0,) * 3, (3.0,) * 3, (3,), 64), loss_fn=nn.MSELoss())
    for i in range(0, 64, 8):
        acc.update(p[i : i + 8], y[i : i + 8])
    assert reads == []
    acc.compute()
    assert reads == ["cpu", "numpy"]


def test_check_pair_refuses_what_torch_would_broadcast():
    check_pair(torch.zeros(4, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"outputs \(4, 1\) and targets \(4,\) differ.*\(4, 4\).*squeeze"):
        check_pair(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(
        ValueError, match=r"head 'cov': .*outputs \(4, 9\) and targets \(4, 3, 3\).*cannot pair"
    ):
        check_pair(torch.zeros(4, 9), torch.zeros(4, 3, 3), head="cov")
    with pytest.raises(
        ValueError, match=r"\(4, 3\) and targets \(4, 1\) differ: torch would broadcast them to \(4, 3\)"
    ):
        check_pair(torch.zeros(4, 3), torch.zeros(4, 1))
    with pytest.raises(TypeError, match=r"must be floating point, got torch\.int64"):
        check_pair(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.warns(UserWarning, match="broadcasting"):  # what torch alone says about the first case
        nn.MSELoss()(torch.zeros(4, 1), torch.zeros(4))


def test_monitor_directions():
    assert MONITOR == "val_r2" and monitor_mode(MONITOR) == "max"
    assert [monitor_mode(n) for n in ("val_mae", "val_rmse_0", "val_cov_rmse", "val_cov_r2_1")] == [
        "min", "min", "min", "max",
    ]  # fmt: skip
    assert monitor_mode("val_r2_undefined") is None and monitor_mode("val_loss") is None
