"""Regression through fit: float targets in large units train on standardised targets (the training set's
mean and std recorded in the run, kept by a resume), reach R^2 > 0.9 on a linear answer, and val_mae,
val_rmse, val_r2 are in the user's units and agree with scikit-learn; a (B,) target against a (B, 1)
output is refused before the first step, naming both shapes."""

import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from torch import nn
from torch.utils.data import TensorDataset

import nbtools as nbt
from nbtools.runs import load_checkpoint
from tests.helpers import StopAfter, assert_same, without_times

CFG = nbt.TrainConfig(
    epochs=6, batch_size=16, lr=3e-2, monitor="val_r2", log_every=4, checkpoint_every_minutes=None, seed=0
)
W = torch.tensor([[3.0], [-2.0], [1.0], [0.5], [0.0]])


def _data(n: int, seed: int, squeeze: bool = False) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = 1000.0 + 100.0 * (x @ W) + 10.0 * torch.randn(n, 1, generator=g)  # user units: ~1e3 +- 4e2
    return TensorDataset(x, y[:, 0] if squeeze else y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))


def _fit(run_dir, cfg=CFG, **kw):
    return nbt.fit(_model(), _data(96, 0), _data(48, 1), nn.MSELoss(), cfg, run_dir, verbose=False, **kw)


def test_regression_trains_on_standardised_targets_and_reports_user_units(tmp_path):
    run = _fit(tmp_path / "run")
    train_y = _data(96, 0).tensors[1].double().numpy()
    scaler = run.task["target_scaler"]
    assert run.task["name"] == "regression"
    assert scaler["mean"] == pytest.approx([train_y.mean()]) and scaler["std"] == pytest.approx(
        [train_y.std()]
    )
    assert run.task["chance_loss"] == pytest.approx(1.0, abs=1e-6)  # MSE of predicting the mean, standardised
    last = run.history[-1]
    assert last["val_r2"] > 0.9
    x, y = _data(48, 1).tensors
    run.model.eval()
    with torch.no_grad():
        pred = (run.model(x).double() * scaler["std"][0] + scaler["mean"][0]).numpy()
    assert last["val_mae"] == pytest.approx(mean_absolute_error(y.numpy(), pred), rel=1e-6)
    assert last["val_rmse"] == pytest.approx(root_mean_squared_error(y.numpy(), pred), rel=1e-6)
    assert last["val_r2"] == pytest.approx(r2_score(y.numpy(), pred), abs=1e-6)
    assert last["val_mae"] > 1.0  # user units, not standardised ones
    kept = torch.load(tmp_path / "run" / "best_val.pt", weights_only=True)
    assert kept["predicted"].shape == (48, 1) and "logits" not in kept


def test_raw_scale_head_bias_starts_at_the_training_mean(tmp_path):
    model = _model()
    nbt.fit(model, _data(96, 0), _data(48, 1), nn.MSELoss(), CFG.replace(epochs=1, lr=1e-12), tmp_path / "r",
            verbose=False)  # fmt: skip
    assert float(model[2].bias.detach().abs().max()) < 1e-9  # 0 standardised = the training mean


def test_regression_resume_keeps_the_scaler_and_is_bit_identical(tmp_path):
    straight = _fit(tmp_path / "a", CFG.replace(epochs=3))
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path / "b", CFG.replace(epochs=3), batch_transform=StopAfter(8))  # in epoch 2
    resumed = _fit(tmp_path / "b", CFG.replace(epochs=3), resume="latest")
    a, b = load_checkpoint(tmp_path / "a" / "epoch_003.pt"), load_checkpoint(tmp_path / "b" / "epoch_003.pt")
    assert_same(a["model"], b["model"], "model")
    assert resumed.task == straight.task
    assert without_times(resumed.history) == without_times(straight.history)


def test_a_scalar_target_against_a_one_column_output_is_refused_naming_both_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"outputs \(1, 1\) and targets \(1,\)"):
        nbt.fit(_model(), _data(96, 0, squeeze=True), _data(48, 1, squeeze=True), nn.MSELoss(), CFG,
                tmp_path / "r", verbose=False)  # fmt: skip
    assert not list((tmp_path / "r").iterdir())  # refused before anything was written


def test_monitor_of_another_task_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"val_dice.*val_r2"):
        _fit(tmp_path / "r", CFG.replace(monitor="val_dice"))
    assert not list((tmp_path / "r").iterdir())  # refused before anything was written


def test_task_monitor_tables_agree_with_the_config_direction():
    from nbtools.tasks.registry import TASKS

    for task in TASKS.values():
        for name, mode in task.monitors.items():
            assert nbt.TrainConfig(monitor=name).monitor_mode == mode, name
