"""A run on the user's own folder as its user reads it (issue 29): the classes by name in the doctor's
findings, the dashboard, the report and `compare_runs`, and the notebooks' predict cell
(`run_predictions`): the validation set against the run's own record, new files into predictions.csv."""

import csv

import pytest
from matplotlib.figure import Figure

import nbtools as nbt
from nbtools import recipes
from nbtools.diagnose import rules
from nbtools.runs import Run
from nbtools.train.monitor import preflight_finding
from nbtools.viz import panels
from nbtools.viz.dashboard import Dashboard
from tests.test_fit_faults import OneClass
from tests.test_rules import epoch
from tests.user_files import write_png_folder

PAGES = {"authentic": 10, "forged": 6}  # label 0 authentic, label 1 forged (the second in sorted order)


@pytest.fixture(scope="module")
def pages_run(tmp_path_factory):
    """A focal2d run of one tiny epoch on a folder of PNG pages, trained here."""
    root = tmp_path_factory.mktemp("pages")
    pages = write_png_folder(root / "pages", PAGES)
    job = recipes.make_job("focal2d", data=str(pages), size=32, smoke=True, epochs=1, batch_size=4)
    run = job.fit(root / "runs" / "pages", verbose=False)
    return root, run


def _legend(fig: Figure, i: int = 0) -> list[str]:
    return [t.get_text() for t in fig.axes[i].get_legend().get_texts()]


def test_findings_name_the_classes_the_run_records(tmp_path):
    # every sample predicted forged, at chance: the model ignores its input
    collapsed = [epoch(e, auc=0.5, cm=((0, 35), (0, 15))) for e in (1, 2, 3)]
    named = Run(
        tmp_path,
        nbt.TrainConfig(epochs=10),
        history=collapsed,
        meta={"data": {"classes": ["authentic", "forged"]}},
    )
    f = rules.class_collapse(named)
    assert "100% of validation predictions are forged (class 1)" in f.message
    assert "FocalLoss alpha weights forged (class 1)" in f.fix
    plain = rules.class_collapse(Run(tmp_path, nbt.TrainConfig(epochs=10), history=collapsed))
    assert "are class 1," in plain.message and "alpha weights class 1;" in plain.fix  # no names: the label
    cfg = nbt.TrainConfig(monitor="val_auc")
    assert (
        "are all authentic (class 0)" in preflight_finding(cfg, OneClass(), ["authentic", "forged"]).message
    )
    assert "are all class 0" in preflight_finding(cfg, OneClass()).message


def test_the_dashboard_names_the_positive_class(pages_run):
    _, run = pages_run
    dash = Dashboard(run.config.epochs, display=False)
    dash.resumed(run)  # a run's record, as a resume shows it; a new run gets the names from fit's meta
    assert dash.classes == ["authentic", "forged"]
    assert "predicted forged (class 1)" in _legend(dash.fig, 3)  # the validation panel
    fig = Figure()
    panels.metrics_panel(fig.add_subplot(), run.history)
    assert "pred_pos_rate" in _legend(fig)  # a run that records no names


def test_the_report_and_compare_runs_name_the_classes(pages_run):
    root, run = pages_run
    rep = nbt.viz.report(run.run_dir)
    assert any(t.startswith("forged (class 1), AUC") for t in _legend(rep.figures["roc_curve"]))
    ticks = [t.get_text() for t in rep.figures["confusion_matrix"].axes[0].get_xticklabels()]
    assert ticks == ["authentic", "forged"]
    row = nbt.compare_runs(root / "runs")["pages"]
    assert (row["data"], row["files"], row["classes"]) == ("pages", 16, ["authentic", "forged"])
    assert "pages, 16 files [authentic, forged]" in str(nbt.compare_runs(root / "runs"))


def test_the_predict_cell_on_the_validation_set_agrees_with_the_run(pages_run):
    _, run = pages_run
    result = recipes.run_predictions(run)  # NEW_DATA = None
    assert result.csv == run.run_dir / "predictions_val.csv" and result.epoch == run.best_epoch
    best = run.best()
    for metric, recorded, now in result.comparison():
        assert recorded == best[f"val_{metric}"] and now == pytest.approx(recorded, abs=1e-12), metric
    assert "the same metrics as the run recorded at epoch" in str(result)
    with open(result.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.predictions) == sum(map(sum, best["val_confusion"]))
    assert set(rows[0]) == {
        "path",
        "label",
        "predicted",
        "prob_authentic",
        "prob_forged",
        "weights",
        "threshold",
    }
    assert {r["weights"] for r in rows} == {"best"} and {float(r["threshold"]) for r in rows} == {
        run.config.threshold
    }
    assert "<script" not in result._repr_html_() and "<th>recorded</th>" in result._repr_html_()


def test_the_predict_cell_on_new_files_writes_predictions_csv(pages_run, tmp_path):
    _, run = pages_run
    new = write_png_folder(tmp_path / "new", {"authentic": 3, "forged": 2}, seed=7)
    result = recipes.run_predictions(run.run_dir, str(new))
    assert (
        result.csv == run.run_dir / "predictions.csv"
        and result.recorded is None
        and result.comparison() == []
    )
    assert len(result.predictions) == 5 and set(result.now) == {"acc", "precision", "recall", "f1", "auc"}
    text = str(result)
    assert f"5 predictions on {new} with the best weights" in text and "on the known labels: acc" in text
    assert len(result.csv.read_text().splitlines()) == 6
    with pytest.raises(ValueError, match="weights must be one of"):
        recipes.run_predictions(run.run_dir, str(new), weights="newest")
