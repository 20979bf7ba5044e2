"""nbt.predict: a trained run applied to new files (NIfTI and PNG written here), its CSV, TTA, and
agreement with the metrics the run recorded for its validation set."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools import recipes
from nbtools.runs import classification_metrics
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
ROOT = Path(__file__).resolve().parents[1]


def _nifti(path: Path, shape, seed: int) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.Nifti1Image(arr, AFFINE).to_filename(str(path))
    return path


def _png(path: Path, size, seed: int) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    """A resnet3d recipe run of two tiny epochs (16^3 volumes), trained here."""
    run_dir = tmp_path_factory.mktemp("run3d")
    job = recipes.make_job(
        "resnet3d", smoke=True, n_train=8, n_val=8, epochs=2, batch_size=4, checkpoint_every_minutes=None
    )
    run = job.fit(run_dir, verbose=False, dashboard=None)
    return run_dir, run, job


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """NIfTI files in class folders (shapes other than the run's: read at the run's 16^3)."""
    root = tmp_path_factory.mktemp("volumes")
    files = [
        _nifti(root / cls / f"case_{i}.nii.gz", (18, 14, 16), seed=10 * k + i)
        for k, cls in enumerate(["benign", "malignant"])
        for i in range(3)
    ]
    return root, files


def test_predict_a_labelled_nifti_folder_one_row_per_file(run3d, volumes, tmp_path):
    run_dir, _, _ = run3d
    root, files = volumes
    preds = nbt.predict(run_dir, root)
    assert len(preds) == len(files) and preds.probs.shape == (6, 2)
    assert sorted(preds.paths) == sorted(map(str, files))
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, atol=1e-12)
    assert preds.classes == ["benign", "malignant"]  # the run records none: the folder's names
    assert preds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    rows = _rows(preds.to_csv(tmp_path / "out" / "predictions.csv"))
    assert list(rows[0]) == [
        "path",
        "label",
        "predicted",
        "prob_benign",
        "prob_malignant",
        "weights",
        "threshold",
    ]
    assert {(r["weights"], r["threshold"]) for r in rows} == {("best", "0.5")}, "what made `predicted`"
    assert [r["path"] for r in rows] == preds.paths
    assert [r["label"] for r in rows] == ["benign"] * 3 + ["malignant"] * 3
    for r, p in zip(rows, preds.probs):
        assert abs(float(r["prob_benign"]) + float(r["prob_malignant"]) - 1) < 1e-6
        assert float(r["prob_malignant"]) == pytest.approx(p[1], abs=1e-7)
        assert r["predicted"] == ("malignant" if p[1] >= 0.5 else "benign")
    assert not list((tmp_path / "out").glob(".*tmp*"))  # written atomically, no temp file left


def test_tta_averages_flips_and_keeps_the_shape(run3d, volumes):
    run_dir, _, _ = run3d
    plain = nbt.predict(run_dir, volumes[0])
    tta = nbt.predict(run_dir, volumes[0], tta=True)
    assert tta.probs.shape == plain.probs.shape and tta.tta
    np.testing.assert_allclose(tta.probs.sum(axis=1), 1.0, atol=1e-12)
    assert not np.allclose(tta.probs, plain.probs, atol=1e-6)
    # the same average by hand: the 8 flip combinations of the D, H, W axes that Augment3D flips
    ds = nbt.data.VolumeFolder(volumes[0], shape=(16, 16, 16))
    model = nbt.models.resnet3d(depth=10, in_channels=1, num_classes=2, dropout=0.1, width=0.25)
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    model.eval()
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    combos = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    with torch.no_grad():
        mean = torch.stack([torch.softmax(model(x.flip(c) if c else x), 1) for c in combos]).mean(0)
    np.testing.assert_allclose(tta.probs, mean.double().numpy(), atol=1e-5)


def test_predict_on_the_val_set_reproduces_the_recorded_val_metrics(run3d):
    run_dir, run, job = run3d
    preds = nbt.predict(run_dir, job.val_data, weights="best")
    best = run.best()
    metrics = classification_metrics(preds.labels, preds.logits, run.config.threshold)
    for k in ("acc", "precision", "recall", "f1", "auc", "confusion"):
        assert metrics[k] == best[f"val_{k}"], k
    assert preds.metrics() == metrics
    saved = torch.load(run_dir / "best_val.pt", weights_only=True)  # fit's logits at the best epoch
    assert torch.equal(torch.from_numpy(preds.logits), saved["logits"])
    last = nbt.predict(run_dir, job.val_data, weights="last")
    assert torch.equal(torch.from_numpy(last.logits), _logits(run.model, job.val_data))


def _logits(model: nn.Module, ds) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [
                model(torch.stack([ds[i][0] for i in range(j, min(j + 4, len(ds)))]))
                for j in range(0, len(ds), 4)
            ]
        )


def test_unlabelled_folder_and_label_free_csv(run3d, tmp_path):
    run_dir, _, _ = run3d
    flat = [_nifti(tmp_path / "new" / f"scan_{i}.nii.gz", (16, 16, 12), seed=i) for i in range(3)]
    preds = nbt.predict(run_dir, tmp_path / "new")
    assert preds.labels is None and preds.paths == list(map(str, flat))
    assert preds.classes == ["0", "1"]  # neither the run nor the data names them
    rows = _rows(preds.to_csv(tmp_path / "p.csv"))
    assert (
        list(rows[0]) == ["path", "predicted", "prob_0", "prob_1", "weights", "threshold"] and len(rows) == 3
    )
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "".join(f"new/{p.name}\n" for p in flat[:2]))
    from_csv = nbt.predict(run_dir, listing)
    assert from_csv.labels is None and len(from_csv) == 2
    np.testing.assert_array_equal(from_csv.probs, preds.probs[:2])
    from_run = nbt.predict(run3d[1], tmp_path / "new")  # the Run of a recipe job: rebuilt from its folder
    np.testing.assert_array_equal(from_run.probs, preds.probs)


def test_focal2d_run_predicts_png_files_with_horizontal_tta(tmp_path):
    job = recipes.make_job(
        "focal2d", smoke=True, n_train=8, n_val=8, epochs=1, batch_size=4, checkpoint_every_minutes=None
    )
    job.fit(tmp_path / "run", verbose=False, dashboard=None)
    pages = [_png(tmp_path / "pages" / f"page_{i}.png", (40 + 4 * i, 30), seed=i) for i in range(3)]
    plain = nbt.predict(tmp_path / "run", tmp_path / "pages")
    tta = nbt.predict(tmp_path / "run", tmp_path / "pages", tta=True)
    assert plain.probs.shape == tta.probs.shape == (3, 2)  # one logit: 1 - p, p
    assert plain.paths == list(map(str, pages)) and plain.threshold == job.config.threshold == 0.4
    assert plain.predicted.tolist() == (plain.probs[:, 1] >= 0.4).astype(int).tolist()
    assert not np.allclose(plain.probs, tta.probs, atol=1e-6)
    ds = nbt.data.ImageFolder(tmp_path / "pages", size=32, labels="auto")
    model = job.model.eval()
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True))
    x = torch.stack([ds[i][0] for i in range(3)])
    with torch.no_grad():
        p = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(3)))) / 2
    np.testing.assert_allclose(tta.probs[:, 1], p[:, 0].double().numpy(), atol=1e-5)


def test_predict_runs_in_the_precision_the_run_fell_back_to(tmp_path):
    """A run whose fp16 fell back to fp32 (recorded in its newest checkpoint) predicts in fp32 too."""
    val = NoisyBlobs(12, seed=1, augment=False)
    cfg = nbt.TrainConfig(epochs=1, batch_size=8, precision="fp16", checkpoint_every_minutes=None)
    run = tiny_fit(cfg, tmp_path, val=val)
    best = small_cnn()
    best.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    in_fp32 = nbt.predict(best, val).logits  # a module alone: the default precision, fp32 on a CPU
    assert not np.array_equal(nbt.predict(run, val).logits, in_fp32)  # the run's own fp16
    path = tmp_path / "epoch_001.pt"
    state = torch.load(path, weights_only=True)
    device = state["precision"]["device"]
    state["precision"].update(mode="fp32", fallback={"from": "fp16", "reason": "test", "device": device})
    torch.save(state, path)
    np.testing.assert_array_equal(nbt.predict(run, val).logits, in_fp32)


def test_a_model_or_a_plain_fit_run_with_a_dataset(tmp_path):
    train, val = NoisyBlobs(24, seed=0), NoisyBlobs(12, seed=1, augment=False)
    cfg = nbt.TrainConfig(epochs=2, batch_size=6, checkpoint_every_minutes=None, monitor="val_acc")
    run = tiny_fit(cfg, tmp_path, train=train, val=val, dashboard=None)
    from_run = nbt.predict(run, val)  # the Run from fit: its model with best.pt loaded into a copy
    saved = torch.load(tmp_path / "best_val.pt", weights_only=True)
    assert torch.equal(torch.from_numpy(from_run.logits), saved["logits"])
    assert from_run.classes == ["0", "1"] and from_run.paths is None
    assert list(_rows(from_run.to_csv(tmp_path / "p.csv"))[0]) == [
        "index",
        "label",
        "predicted",
        "prob_0",
        "prob_1",
        "weights",
        "threshold",
    ]
    as_is = nbt.predict(run.model, val)  # a module: the weights it has (the last epoch's)
    assert as_is.weights is None and len(as_is) == 12
    loader = torch.utils.data.DataLoader(val, batch_size=5)
    np.testing.assert_array_equal(nbt.predict(run.model, loader).probs, as_is.probs)
    with pytest.raises(ValueError, match=r"not trained from a recipe.*nbt\.predict\(model, dataset\)"):
        nbt.predict(tmp_path, val)
    with pytest.raises(ValueError, match="pass a Dataset instead"):
        nbt.predict(run.model, tmp_path)
    with pytest.raises(ValueError, match="weights must be one of"):
        nbt.predict(run, val, weights="newest")
    with pytest.raises(FileNotFoundError, match=r"best_ema\.pt does not exist .*no EMA"):
        nbt.predict(run, val, weights="best_ema")


@pytest.mark.slow
def test_cli_predict_writes_the_csv(run3d, volumes, tmp_path):
    run_dir, _, _ = run3d
    out = tmp_path / "predictions.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "nbtools", "predict", str(run_dir), "--data", str(volumes[0])]
    done = subprocess.run(
        [*cmd, "--out", str(out), "--tta"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert len(rows) == 6 and list(rows[0])[:3] == ["path", "label", "predicted"]
    assert str(out) in done.stdout and "acc" in done.stdout


def test_cli_predict_names_what_is_missing(run3d, tmp_path, capsys):
    from nbtools.cli import main

    assert (
        main(
            ["predict", str(run3d[0]), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "not an nbtools run folder" in capsys.readouterr().err
