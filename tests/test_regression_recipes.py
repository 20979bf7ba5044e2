"""The regression recipes from the user's side: `python -m nbtools train resnet3d --task regression` on a
CSV of .nii.gz volumes (nibabel), `predict` writing predicted/target columns in the user's units, a resume
that refuses changed targets, and focal2d's backbone on a CSV of PNGs."""

import csv
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from nbtools import cli, recipes, viz
from nbtools.recipes import DataChangedError
from tests.test_regression_data import write_target_csv

TRAIN = ["train", "resnet3d", "--task", "regression", "--data", "targets.csv", "--shape", "16", "16", "16"]
FAST = ["--smoke", "--batch-size", "4", "--epochs", "2"]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_trains_and_predicts_a_regression_csv(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_target_csv(tmp_path, n=12, shape=(16, 16, 16))
    assert cli.main([*TRAIN, *FAST, "--run-dir", "runs/ages"]) == 0
    out = capsys.readouterr().out
    assert "targets: age" in out and "targets (training part): age mean" in out
    assert "val_mae" in out and "val_r2" in out and "val_acc" not in out
    figures = viz.report("runs/ages").figures  # regression figures, in years; no confusion matrix
    assert {"predicted_vs_true", "residuals"} <= set(figures) and "confusion_matrix" not in figures
    assert figures["predicted_vs_true"].axes[0].get_xlabel() == "true age"
    assert cli.main(["predict", "runs/ages", "--data", "targets.csv", "--out", "preds.csv"]) == 0
    out = capsys.readouterr().out
    assert "wrote 12 rows to preds.csv" in out and "mae " in out and "r2 " in out
    rows = _rows(tmp_path / "preds.csv")
    assert list(rows[0]) == ["path", "target", "predicted", "weights"]
    written = {Path(r["path"]).name: float(r["age"]) for r in _rows(tmp_path / "targets.csv")}
    assert [float(r["target"]) for r in rows] == pytest.approx([written[Path(r["path"]).name] for r in rows])
    predicted = np.array([float(r["predicted"]) for r in rows])
    # the user's units (ages 40-60), not the standardised ones the model trained on (around 0)
    assert 30 < predicted.mean() < 70, predicted
    with pytest.raises(SystemExit):
        cli.main([*TRAIN, "--task", "ordinal", "--run-dir", "runs/x"])
    assert "invalid choice: 'ordinal'" in capsys.readouterr().err


def test_a_resume_refuses_changed_targets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_path = write_target_csv(tmp_path, n=10, columns=("age", "score"), shape=(16, 16, 16))
    args = dict(task="regression", data="targets.csv", shape=16, smoke=True, batch_size=4, epochs=1)
    job = recipes.make_job("resnet3d", **args)
    assert isinstance(job.loss_fn, nn.MSELoss) and job.model.fc.out_features == 2
    assert job.config.task == "regression" and job.config.monitor == "val_r2"
    run = job.fit("runs/r", verbose=False)
    assert {"val_mae_age", "val_r2_score"} <= set(run.history[-1])  # per output, named by the CSV's columns
    again = recipes.load_job("runs/r", epochs=2)  # the same targets: resumes
    assert again.data_record["task"] == "regression"
    lines = csv_path.read_text().splitlines()
    path, age, score = lines[3].split(",")
    lines[3] = f"{path},{float(age) + 2.5:.6g},{score}"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataChangedError) as e:
        recipes.load_job("runs/r", epochs=2)
    was, now = (
        f"age={float(age)!r},score={float(score)!r}",
        f"age={float(age) + 2.5!r},score={float(score)!r}",
    )
    assert f"1 target changed ({path}: {was} -> {now})" in str(e.value)


def test_focal2d_backbone_on_a_csv_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["path,brightness,contrast"]
    for i in range(8):
        level = int(rng.integers(40, 200))
        Image.fromarray(np.full((20, 20, 3), level, np.uint8)).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,{level / 255:.4f},{i % 3}")
    (tmp_path / "pages.csv").write_text("\n".join(rows) + "\n")
    job = recipes.make_job("focal2d", task="regression", data=tmp_path / "pages.csv", size=32, smoke=True,
                           regression_loss="huber")  # fmt: skip
    assert [m for m in job.model.modules() if isinstance(m, nn.Linear)][-1].out_features == 2
    assert isinstance(job.loss_fn, nn.HuberLoss) and job.config.monitor == "val_r2"
    x, y = job.train_data[0]
    assert x.shape == (3, 32, 32) and y.shape == (2,) and y.dtype.is_floating_point
    assert job.meta["data"]["classes"] == ["brightness", "contrast"]
    with pytest.raises(ValueError, match="regression_loss must be one of"):
        recipes.make_job("focal2d", task="regression", regression_loss="log-cosh", smoke=True)
    with pytest.raises(ValueError, match="task='regression' has none: drop positive="):
        recipes.make_job("resnet3d", task="regression", positive="old", smoke=True)
    with pytest.raises(ValueError, match="add task='regression', or drop it"):
        recipes.make_job("resnet3d", targets=["age"], smoke=True)


@pytest.mark.slow
def test_04_resumes_a_regression_recipe_run(tmp_path, monkeypatch):
    """A regression run of the CLI on a CSV of .nii.gz files, resumed by 04_resume (nbclient) to epoch 4."""
    import nbformat
    from nbclient import NotebookClient

    import nbtools as nbt

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", str(root))  # the kernel imports this checkout's nbtools
    monkeypatch.setenv("NBTOOLS_SMOKE", "1")  # 04 trains on to epoch 4
    monkeypatch.chdir(tmp_path)
    write_target_csv(tmp_path, n=12, shape=(16, 16, 16))
    assert cli.main([*TRAIN, *FAST, "--run-dir", "runs/resnet3d"]) == 0
    nb = nbformat.read(root / "notebooks" / "04_resume.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    run = nbt.runs.Run.load(tmp_path / "runs/resnet3d")
    assert run.epoch == 4 and run.config.task == "regression" and run.history[-1]["val_r2"] is not None
    assert (tmp_path / "runs/resnet3d/loss_curve.png").is_file()
