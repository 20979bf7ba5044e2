"""The doctor's task rules on recorded histories: seg-background-only, stopped-too-early before the model
started learning (seed 001: Dice ~0 for 21 epochs, then 0.30), and loss-term-nonfinite naming the term."""

import nbtools as nbt
from nbtools.diagnose import rules
from nbtools.runs import Run, Stop
from tests.test_rules import step

SEG = {"name": "segmentation", "num_classes": 3, "classes": ["background", "tumour", "edema"]}
EARLY = Stop("early-stop", "early stopping: val_dice did not improve")


def _seg_run(tmp_path, tumour, edema, train, stop=None, **cfg):
    hist = [
        {
            "epoch": e,
            "train_loss": t,
            "val_loss": 0.5,
            "val_dice": (a + b) / 2,
            "val_dice_tumour": a,
            "val_dice_edema": b,
        }
        for e, (a, b, t) in enumerate(zip(tumour, edema, train), 1)
    ]
    run = Run(tmp_path, nbt.TrainConfig(monitor="val_dice", **cfg), history=hist, stop=stop)
    run.task = dict(SEG)
    return run


def test_seg_background_only_names_the_class_while_the_loss_falls_and_resolves(tmp_path):
    falling = [1.0, 0.8, 0.6, 0.5]
    run = _seg_run(tmp_path, [0.0, 0.01, 0.0, 0.02], [0.1, 0.3, 0.5, 0.6], falling)
    f = rules.seg_background_only(run)
    assert f.code == "seg-background-only" and "'tumour'" in f.message and "'edema'" not in f.message
    assert f.is_open and "DiceCELoss" in f.fix and "oversample" in f.fix
    run = _seg_run(tmp_path, [0.0, 0.01, 0.0, 0.02, 0.3], [0.1, 0.3, 0.5, 0.6, 0.6], [*falling, 0.45])
    f = rules.seg_background_only(run)
    assert f.status == "resolved" and f.resolved_epoch == 5
    flat = _seg_run(tmp_path, [0.0] * 4, [0.5] * 4, [1.0, 1.0, 0.995, 0.99])  # the loss does not fall
    assert rules.seg_background_only(flat) is None
    run.task = {"name": "classification"}
    assert rules.seg_background_only(run) is None


def test_stopped_too_early_before_the_model_started_learning(tmp_path):
    asleep = _seg_run(tmp_path, [0.0] * 8, [0.001] * 8, [1.0 - 0.01 * e for e in range(8)], EARLY, patience=5)
    f = rules.stopped_too_early(asleep)
    assert f.code == "stopped-too-early" and "before the model started learning" in f.message
    assert "min_epochs" in f.fix
    awake = _seg_run(
        tmp_path, [0.0, 0.0, 0.3, 0.31, 0.3, 0.3, 0.3, 0.3], [0.0] * 8, [1.0] * 8, EARLY, patience=5
    )
    assert rules.stopped_too_early(awake) is None  # it learned from epoch 3, then plateaued
    assert rules.stopped_too_early(_seg_run(tmp_path, [0.0] * 8, [0.0] * 8, [1.0] * 8, patience=5)) is None


def test_loss_term_nonfinite_names_the_innermost_term_while_validation_is_finite(tmp_path):
    bad = {**step(3, skipped=2, nonfinite=2), "nonfinite_terms": ["main", "main.log_cosh_dice"]}
    bad["skipped_steps"] = [27, 29]
    steps = [step(1), step(2), bad]
    run = Run(tmp_path, nbt.TrainConfig(), steps=steps, history=[{"epoch": 1, "val_loss": 0.4}])
    f = rules.loss_term_nonfinite(run)
    assert (
        f.code == "loss-term-nonfinite" and "'main.log_cosh_dice'" in f.message and "'main'," not in f.message
    )
    assert "from step 27" in f.message and f.is_open and "Do not clamp" in f.fix
    run.steps.append(step(4))
    assert rules.loss_term_nonfinite(run).status == "resolved"
    nan_val = Run(tmp_path, nbt.TrainConfig(), steps=steps, history=[{"epoch": 1, "val_loss": float("nan")}])
    assert rules.loss_term_nonfinite(nan_val) is None  # the model itself went bad: not the loss's term
    assert rules.loss_term_nonfinite(Run(tmp_path, nbt.TrainConfig(), steps=[step(1), step(2)])) is None
