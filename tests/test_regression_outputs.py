"""What a regression run hands back: RegressionPredictions (CSV columns in user units, metrics agreeing with
scikit-learn), the report's scatter and residual figures, and the dashboard's per-term gradient panels."""

import csv

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from nbtools.recipes.regression_predictions import RegressionPredictions, regression_predictions
from nbtools.recipes.tta import FlipAverage
from nbtools.tasks import TargetScaler
from nbtools.viz.dashboard import Dashboard
from nbtools.viz.regression_figures import residual_figure, scatter_figure


def test_predictions_csv_and_metrics(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, size=(12, 2))
    p = y + rng.normal(0, 3, size=(12, 2))
    preds = RegressionPredictions(p, ["age", "score"], y, [f"s{i}.nii.gz" for i in range(12)], weights="best")
    m = preds.metrics()
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p), abs=1e-9)
    assert m["rmse"] == pytest.approx(root_mean_squared_error(y, p), abs=1e-9)
    assert m["r2"] == pytest.approx(r2_score(y, p), abs=1e-9) and m["r2_age"] == pytest.approx(
        r2_score(y[:, 0], p[:, 0])
    )
    with open(preds.to_csv(tmp_path / "p.csv")) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "path",
        "target_age",
        "target_score",
        "predicted_age",
        "predicted_score",
        "weights",
    ]
    assert (
        float(rows[4]["predicted_score"]) == pytest.approx(p[4, 1], rel=1e-7) and rows[4]["weights"] == "best"
    )
    one = RegressionPredictions(p[:, :1], ["age"], None, None)
    assert list(one.rows()[0]) == ["index", "predicted", "weights"]
    with pytest.raises(ValueError, match="no targets"):
        one.metrics()
    assert "MAE" in repr(preds) and "R2" in repr(preds)


def test_standardised_outputs_come_back_in_user_units():
    scaler = TargetScaler((60.0,), (8.0,), (1,), 100)
    out = torch.tensor([[0.0], [1.5], [-2.0]])
    ds = [(torch.zeros(1), torch.tensor([61.0])) for _ in range(3)]
    preds = regression_predictions(out, torch.tensor([[61.0], [70.0], [40.0]]), ds, {}, scaler, False, None)
    assert preds.predicted[:, 0].tolist() == [60.0, 72.0, 44.0] and preds.targets[1, 0] == 70.0
    assert preds.names == ["0"]


def test_flip_average_of_values():
    class Left(torch.nn.Module):  # the mean of the left half: changes under a flip of the width
        def forward(self, x):
            return x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3)).unsqueeze(1)

    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tta = FlipAverage(Left(), dims=(3,), values=True)
    assert tta(x).item() == pytest.approx(x.mean().item())


def test_scatter_and_residual_figures():
    y = np.linspace(0, 10, 20)[:, None] * [1, 2]
    p = y * 0.8 + 1
    fig = scatter_figure(y, p, epoch=3, names=["a", "b"])
    assert len(fig.axes) == 2 and "predicted vs true" in fig._suptitle.get_text()
    assert fig.axes[1].get_xlabel() == "true b" and "R$^2$" in fig.axes[0].get_title()
    res = residual_figure(y, p, epoch=3, names=["a", "b"])
    assert "residual mean" in res.axes[0].get_title()
    with pytest.raises(ValueError, match="differ"):
        scatter_figure(y, p[:, :1], epoch=3)


def test_dashboard_shows_per_term_panels_only_for_multitask_runs():
    base = {"steps": 3, "loss": 1.0, "grad_norm": 1.0, "grad_norm_max": 2.0, "group_grad_norm": {"all": 1.0},
            "lr": {"all": 1e-3}, "skipped": 0, "skipped_steps": [], "scale": None, "drift": 0.01, "param_norm": 1.0}  # fmt: skip
    plain = Dashboard(epochs=1, display=False)
    plain.steps = [{**base, "step": s} for s in (1, 2)]
    plain.draw()
    assert not any("per-term" in ax.get_title() for ax in plain.fig.axes)
    multi = Dashboard(epochs=1, display=False)
    terms = {"term_grad": {"size": 2.0, "count": 0.1}, "term_cos": {"size|count": -0.5}, "term_params": "bn"}
    multi.steps = [{**base, "step": s, **terms} for s in (1, 2)]
    multi.draw()
    titles = [ax.get_title() for ax in multi.fig.axes]
    assert "per-term gradient (shared)" in titles and "per-term gradient cosine" in titles
    cos = multi.fig.axes[titles.index("per-term gradient cosine")]
    assert [t.get_text() for t in cos.get_legend().get_texts()] == ["size vs count"]


def test_head_predictions_columns_and_metrics(tmp_path):
    from nbtools.recipes.head_predictions import HeadPredictions

    size = np.array([[10.0], [20.0], [30.0]])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    preds = HeadPredictions(
        {"size": size + 1, "count": probs}, {"size": "regression", "count": "classification"},
        {"size": size, "count": np.array([0, 2, 2])}, ["a", "b", "c"], "best",
    )  # fmt: skip
    m = preds.metrics()
    assert m["size_mae"] == pytest.approx(1.0) and m["count_acc"] == pytest.approx(2 / 3)
    assert m["size_r2"] == pytest.approx(r2_score(size, size + 1))
    with open(preds.to_csv(tmp_path / "heads.csv")) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "target_size", "predicted_size", "target_count", "predicted_count",
                             "prob_count_0", "prob_count_1", "prob_count_2", "weights"]  # fmt: skip
    assert rows[1]["predicted_count"] == "1" and float(rows[2]["predicted_size"]) == 31.0
