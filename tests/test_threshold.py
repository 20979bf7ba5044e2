"""`threshold`: imbalanced Focal Loss fine-tuning (seed 004) puts the scores below 0.5; the doctor says
so with both F1s and the threshold to use, and the report marks it on the ROC and PR curves."""

import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools.diagnose.threshold import THRESHOLD_F1_GAIN
from nbtools.runs import classification_metrics
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit


class Imbalanced(NoisyBlobs):
    """NoisyBlobs with about 20 % positives."""

    def __init__(self, n: int, seed: int, augment: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.y = (torch.rand(n, generator=g) < 0.2).long()
        self.x = torch.randn(n, 1, 8, 8, generator=g) + self.y.view(-1, 1, 1, 1).float()
        self.augment = augment


@pytest.fixture(scope="module")
def focal_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("focal")
    cfg = nbt.TrainConfig(epochs=4, batch_size=8, lr=1e-2, log_every=3, checkpoint_every_minutes=None)
    loss = nbt.losses.FocalLoss(gamma=2.0, alpha=0.25)
    run = nbt.fit(
        small_cnn(classes=1), Imbalanced(64, 0), Imbalanced(64, 1, augment=False), loss, cfg, d, verbose=False
    )
    return d, run


def test_a_threshold_far_from_the_scores_is_named_with_both_f1s(focal_run):
    d, run = focal_run
    best = run.best()
    assert best["val_auc"] > 0.9 and best["val_f1"] < 0.5  # the model ranks well; 0.5 cuts wrong
    [f] = [f for f in run.findings if f.code == "threshold"]
    t = best["val_opt_threshold"]
    assert f.epoch == run.best_epoch and f.is_open
    assert f"F1 is {best['val_f1']:.3f} at threshold 0.5 but {best['val_opt_f1']:.3f} at {t:.4g}" in f.message
    assert f"use threshold={t:.4g} for the metrics of later epochs" in f.fix
    # the numbers are the best epoch's predictions in best_val.pt, cut where the finding says
    saved = torch.load(d / "best_val.pt", weights_only=True)
    assert saved["epoch"] == run.best_epoch
    at_t = classification_metrics(saved["targets"].numpy(), saved["logits"].numpy(), t)
    assert (
        at_t["f1"] == pytest.approx(best["val_opt_f1"])
        and best["val_opt_f1"] - best["val_f1"] >= THRESHOLD_F1_GAIN
    )
    # class-collapse at 0.5 says the cut, not the model, is the problem (its AUC is high)
    [c] = [f for f in run.findings if f.code == "class-collapse"]
    assert "the scores rank the classes and threshold 0.5 puts them all on one side" in c.message
    assert nbt.doctor(d) == run.findings


def test_the_report_marks_both_thresholds_on_the_roc_and_pr_curves(focal_run):
    d, run = focal_run
    rep = nbt.viz.report(d)
    assert (d / "pr_curve.png").stat().st_size > 1000
    t = run.best()["val_opt_threshold"]
    for name in ("roc_curve", "pr_curve"):
        labels = [text.get_text() for text in rep.figures[name].axes[0].get_legend().get_texts()]
        assert any(lab.startswith("threshold 0.5") for lab in labels), labels
        assert any(lab.startswith(f"F1-optimal {t:.3g}") for lab in labels), labels
    pr_labels = [text.get_text() for text in rep.figures["pr_curve"].axes[0].get_legend().get_texts()]
    assert f"(F1 {run.best()['val_opt_f1']:.3f})" in " ".join(pr_labels)


def test_a_run_whose_threshold_fits_stays_quiet(tmp_path):
    cfg = nbt.TrainConfig(epochs=4, batch_size=8, lr=3e-2, checkpoint_every_minutes=None)
    run = tiny_fit(cfg, tmp_path)
    best = run.best()
    assert best["val_opt_f1"] - best["val_f1"] < THRESHOLD_F1_GAIN
    assert "threshold" not in [f.code for f in nbt.doctor(run)]


def test_a_model_at_chance_is_not_told_to_move_its_threshold(tmp_path):
    # predicting every sample positive gives F1 2p/(1+p), better than 0.5 cuts of a chance model; that
    # is no threshold to recommend
    cfg = nbt.TrainConfig(epochs=2, batch_size=8, lr=1e-6, checkpoint_every_minutes=None)
    run = tiny_fit(cfg, tmp_path)
    p = run.best()["val_pos_rate"]
    assert run.best()["val_opt_f1"] <= 2 * p / (1 + p) + THRESHOLD_F1_GAIN
    assert "threshold" not in [f.code for f in run.findings]


def test_the_f1_optimal_threshold_is_the_best_cut():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(int)
    logits = 1.5 * y + rng.normal(-1.0, 1.0, 200)
    m = classification_metrics(y, logits)
    cuts = [classification_metrics(y, logits, t)["f1"] for t in np.unique(1 / (1 + np.exp(-logits)))]
    assert m["opt_f1"] == pytest.approx(max(cuts)) and m["threshold"] == 0.5
    assert classification_metrics(y, logits, m["opt_threshold"])["f1"] == pytest.approx(m["opt_f1"])
