"""Standardised regression targets: the training statistics (from the targets or one pass), the round
trip, the head's bias, and a linear-answer problem that trains to R^2 > 0.9 in a plain torch loop."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

import nbtools as nbt
from nbtools.tasks.regression import RegressionAccumulator
from nbtools.tasks.target_scaling import TargetScaler, target_stats, zero_final_bias


class Loaded(Dataset):
    """Targets only by loading samples (no .targets): target_stats must make one pass."""

    def __init__(self, y: torch.Tensor):
        self.y_hidden, self.loads = y, 0
        self.paths = [f"case_{i:03d}.nii.gz" for i in range(len(y))]

    def __len__(self):
        return len(self.y_hidden)

    def __getitem__(self, i):
        self.loads += 1
        return torch.zeros(1, 4, 4, 4), self.y_hidden[i]


def targets(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, 2, generator=g, dtype=torch.float64) * torch.tensor([[3.0, 0.1], [50.0, 1.0]])
    return (y + torch.tensor([[1e4, -2.0], [300.0, 0.0]])).float()


def test_stats_from_the_targets_and_from_one_pass_agree_with_numpy():
    y = targets()
    ref_mean, ref_std = (
        y.double().reshape(50, -1).mean(0).numpy(),
        y.double().reshape(50, -1).std(0, correction=0).numpy(),
    )
    from_targets = target_stats(TensorDataset(torch.zeros(50, 1), y))
    ds = Loaded(y)
    from_pass = target_stats(ds)
    assert ds.loads == 50
    for s in (from_targets, from_pass):
        assert s.shape == (2, 2) and s.n == 50 and s.constant == ()
        np.testing.assert_allclose(s.mean, ref_mean, rtol=1e-12)
        np.testing.assert_allclose(s.std, ref_std, rtol=1e-7)  # population std (ddof=0)
    sub = target_stats(Subset(TensorDataset(torch.zeros(50, 1), y), range(10)))
    np.testing.assert_allclose(sub.mean, y[:10].double().reshape(10, -1).mean(0).numpy(), rtol=1e-12)


def test_round_trip_and_json():
    y = targets()
    s = target_stats(TensorDataset(torch.zeros(50, 1), y))
    z = s.standardise(y)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.double().reshape(50, -1).mean(0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.double().reshape(50, -1).std(0, correction=0).numpy(), 1.0, rtol=1e-5)
    torch.testing.assert_close(s.unstandardise(z), y, rtol=1e-6, atol=1e-3)  # float32 at 1e4: ulp 1e-3
    assert TargetScaler.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match=r"targets of shape \(50, 4\) do not fit the scaler's targets"):
        s.standardise(y.reshape(50, 4))


def test_a_constant_output_is_shifted_not_scaled_and_named(caplog):
    y = targets()
    y[:, 0, 1] = -2.0
    s = target_stats(TensorDataset(torch.zeros(50, 1), y))
    assert s.constant == (1,) and s.std[1] == 1.0 and "flat indices [1]" in caplog.text
    assert torch.all(s.standardise(y)[:, 0, 1] == 0)


def test_nonfinite_targets_are_refused_by_index_and_file():
    y = targets()
    y[17, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"training sample 17 \(case_017.nii.gz\) is not finite"):
        target_stats(Loaded(y))
    with pytest.raises(ValueError, match="training sample 17 is not finite"):
        target_stats(TensorDataset(torch.zeros(50, 1), y))


def test_zero_final_bias_names_its_layer_and_refuses_when_it_cannot_tell():
    m = nbt.models.resnet3d(depth=10, num_classes=3, width=0.25)
    nn.init.constant_(m.fc.bias, 5.0)
    assert zero_final_bias(m, num_outputs=3) == "fc" and torch.all(m.fc.bias == 0)
    two = nn.ModuleDict({"trunk": nn.Linear(8, 4), "a": nn.Linear(4, 2), "b": nn.Linear(4, 2)})
    with pytest.raises(ValueError, match=r"has 2 nn.Linear with 2 outputs \(trunk \(8->4\), a \(4->2\), b"):
        zero_final_bias(two, num_outputs=2)
    with pytest.raises(ValueError, match=r"has 3 nn\.Linear .*layer='<name>'"):
        zero_final_bias(two)
    assert zero_final_bias(two, layer="b") == "b"
    with pytest.raises(ValueError, match=r"'c' is not an nn\.Linear"):
        zero_final_bias(two, layer="c")
    with pytest.raises(ValueError, match="has no bias"):
        zero_final_bias(nn.Sequential(nn.Linear(3, 1, bias=False)))
    with pytest.raises(ValueError, match=r"has 0 nn.Linear with 1 outputs \(none\)"):
        zero_final_bias(nn.Conv1d(1, 1, 1), num_outputs=1)


def linear_problem(n, seed):
    """y = W x + b with badly scaled outputs (offsets 1e3 and -50, spreads 200 and 0.5), small noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0, 1.5, -1.0], [0.2, 0.1, -0.3, 0.4, 0.0, 0.1]])
    y = (x @ w.T) * torch.tensor([100.0, 1.0]) + torch.tensor([1e3, -50.0])
    return x, y + 0.05 * y.std(0) * torch.randn(n, 2, generator=g)


def train(scaler, standardise, epochs=30):
    """Plain torch: an MLP on linear_problem, MSE on the scaler's standardised targets (or raw ones),
    then the validation metrics in user units."""
    x, y = linear_problem(256, 0)
    xv, yv = linear_problem(128, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    if standardise:
        assert zero_final_bias(model, num_outputs=2) == "2"
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-2), nn.MSELoss()
    z = scaler.standardise(y) if standardise else y
    for _ in range(epochs):
        for i in range(0, 256, 32):
            opt.zero_grad()
            loss_fn(model(x[i : i + 32]), z[i : i + 32]).backward()
            opt.step()
    acc = RegressionAccumulator(scaler, standardised=standardise, loss_fn=loss_fn)
    with torch.no_grad():
        acc.update(model(xv), scaler.standardise(yv) if standardise else yv)
    return acc.compute(), acc.chance_loss, yv


def test_standardised_targets_and_zero_bias_fit_a_linear_answer():
    scaler = target_stats(TensorDataset(*linear_problem(256, 0)))
    got, chance, yv = train(scaler, standardise=True)
    assert got["val_r2"] > 0.9 and got["val_r2_0"] > 0.9 and got["val_r2_1"] > 0.9, got
    assert got["val_rmse_0"] < 0.5 * float(yv[:, 0].std())  # user units: tens, not standardised ~0.1
    assert 0.8 < chance < 1.3  # predicting the training mean: ~1 in standardised units
    raw, raw_chance, _ = train(scaler, standardise=False)  # same model, lr and steps on raw targets
    assert raw["val_r2"] < 0.0 and raw_chance > 1e3, raw
