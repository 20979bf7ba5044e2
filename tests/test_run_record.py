"""The run record: stops are codes plus messages, old metrics.json files still load, and the guards
return decisions instead of changing the run."""

import json

import pytest

import nbtools as nbt
from nbtools.diagnose import rules
from nbtools.runs import Run, Stop
from nbtools.step import Precision
from nbtools.train.guards import check_interval

FP32 = Precision("fp32", "cpu")


def record(step, steps=5, skipped=(), nonfinite=0, drift=1e-3, epoch=1):
    return {
        "epoch": epoch,
        "step": step,
        "steps": steps,
        "loss": 0.5,
        "loss_last": 0.5,
        "grad_norm": 1.0,
        "grad_norm_max": 1.0,
        "group_grad_norm": {"default": 1.0},
        "lr": {"default": 1e-3},
        "scale": 65536.0,
        "skipped": len(skipped),
        "skipped_steps": list(skipped),
        "nonfinite_loss": nonfinite,
        "drift": drift,
        "param_norm": 10.0,
        "seconds": 0.1,
    }


def test_a_stop_round_trips_through_metrics_json(tmp_path):
    run = Run(tmp_path, nbt.TrainConfig(), stop=Stop("early-stop", "early stopping: val_loss flat"))
    run.save()
    back = Run.load(tmp_path)
    assert back.stop == run.stop and back.stopped == "early stopping: val_loss flat"
    assert json.loads((tmp_path / "metrics.json").read_text())["stop"]["code"] == "early-stop"


@pytest.mark.parametrize(
    "text, code",
    [
        ("early stopping: val_auc did not improve by more than 0 for 3 epochs", "early-stop"),
        ("non-finite fp16 steps: fp16 GradScaler skipped 30 of the last 50 steps", "amp"),
        ("non-finite loss or gradients for 20 optimizer steps in a row", "nonfinite"),
        ("", None),
    ],
)
def test_metrics_json_written_before_stop_codes_still_loads(tmp_path, text, code):
    old = Run(tmp_path, nbt.TrainConfig(epochs=8)).to_dict()
    del old["stop"], old["version"]  # as metrics.json was written then
    old["stopped"] = text
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    run = Run.load(tmp_path)
    assert (run.stop.code if run.stop else None) == code and run.stopped == text


def test_rules_branch_on_the_code_not_the_sentence(tmp_path):
    aucs = [0.5, 0.55, 0.72, 0.6, 0.62, 0.64, 0.66, 0.68]
    hist = [{"epoch": e, "val_auc": a, "train_loss": 0.5} for e, a in enumerate(aucs, 1)]
    cfg = nbt.TrainConfig(monitor="val_auc", patience=5)
    reworded = Stop("early-stop", "patience ran out")  # no "early stopping" in the words
    assert rules.stopped_too_early(Run(tmp_path, cfg, history=hist, stop=reworded)) is not None
    other = Stop("nonfinite", "early stopping is not why this run ended")
    assert rules.stopped_too_early(Run(tmp_path, cfg, history=hist, stop=other)) is None


def test_unknown_stop_codes_are_refused():
    with pytest.raises(ValueError, match="stop code must be one of"):
        Stop("tired", "the run was tired")


def test_check_interval_decides_and_changes_nothing(tmp_path):
    run = Run(tmp_path, nbt.TrainConfig(max_bad_steps=8))
    run.steps = [
        record(5, skipped=[1, 2, 3, 4, 5], nonfinite=5),
        record(10, skipped=[6, 7, 8, 9, 10], nonfinite=5),
    ]
    before = run.to_dict()
    first = check_interval(run, run.steps[0], FP32, 0, [])
    assert (
        first.bad_streak == 5
        and first.stop is None
        and [f.code for f in first.findings] == ["nonfinite-loss"]
    )
    second = check_interval(run, run.steps[1], FP32, first.bad_streak, first.amp_window)
    assert second.bad_streak == 10 and second.stop.code == "nonfinite" and "steps 1-10" in second.stop.message
    assert run.to_dict() == before  # the loop applies decisions; the guard touched nothing


def test_fp16_monitor_decides_a_fallback_or_a_stop(tmp_path):
    overflowing = record(50, steps=50, skipped=range(1, 51))
    run = Run(tmp_path, nbt.TrainConfig(), steps=[overflowing])
    fall = check_interval(run, overflowing, Precision("fp16", "cpu"), 0, [])
    assert fall.fall_back and fall.stop is None and fall.amp_window == [] and fall.bad_streak == 0
    strict = Run(tmp_path, nbt.TrainConfig(amp_fallback=False), steps=[overflowing])
    stop = check_interval(strict, overflowing, Precision("fp16", "cpu"), 0, [])
    assert stop.fall_back is None and stop.stop.code == "amp"
    assert [f.code for f in stop.findings] == ["amp-skipped-steps"]
