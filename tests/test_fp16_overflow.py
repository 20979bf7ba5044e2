"""fp16 overflow in the forward pass (seed 000's "Conv3d produces NaN/Inf in fp16"): a non-finite fp16
step that is finite in fp32 is fp16's range, not a NaN. With amp_fallback the run switches and goes
on; without, it stops with that diagnosis. A real NaN keeps the non-finite path; a healthy fp16 run
never pays for the check."""

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.diagnose.fp16_range import fp16_range_check
from nbtools.env import fallback_for
from nbtools.step import Precision
from nbtools.train import guards
from tests.helpers import NoisyBlobs, tiny_fit
from tests.test_guards import Planted


class Gain(nn.Module):
    """Multiplies by a large constant: activations past 65504 in fp16, finite in fp32."""

    def forward(self, x):
        return x * 4e4


def gain_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), Gain(), nn.Flatten(), nn.Linear(144, 2))


def _fit(tmp_path, model, data=None, **cfg):
    cfg = nbt.TrainConfig(
        **{
            "epochs": 2,
            "batch_size": 8,
            "precision": "fp16",
            "log_every": 2,
            "checkpoint_every_minutes": None,
        }
        | cfg
    )
    return tiny_fit(cfg, tmp_path, model=model, train=data or NoisyBlobs())


def test_the_same_batch_is_non_finite_in_fp16_and_finite_in_fp32():
    x, y = NoisyBlobs(n=8, augment=False)[0:8]
    model = gain_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(model(x)).all()  # the failure, as the step sees it
    assert torch.isfinite(model(x)).all()
    found = fp16_range_check(model, [(x, y)], nn.CrossEntropyLoss())
    assert found.verdict == "range" and found.report.name == "2" and "Gain returned" in str(found)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy ran it
    x_nan = x.clone()
    x_nan[0] = float("nan")
    assert fp16_range_check(model, [(x_nan, y)], nn.CrossEntropyLoss()).verdict == "real"
    assert (
        fp16_range_check(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), [(x, y)], nn.CrossEntropyLoss()
        ).verdict
        == "none"
    )


def test_fp16_forward_overflow_switches_precision_names_the_module_and_keeps_training(tmp_path):
    model = gain_net()
    run = _fit(tmp_path, model, epochs=3)
    [amp] = [f for f in run.findings if f.code == "amp-overflow"]
    assert (
        "first under fp16: forward: 2: Gain returned" in amp.message
        and "re-run in fp32 is finite" in amp.message
    )
    assert amp.step == 2 and "switched to fp32 at step 2" in amp.message
    # the wrong advice (lower the LR, clip) is not given: no non-finite finding for a range failure
    assert not [f for f in run.findings if f.code.startswith("nonfinite")], run.findings
    assert "do not lower the LR, clip or clamp" in amp.fix
    # it continued: every epoch trained, no step skipped after the switch, the weights moved
    assert run.stop is None and [h["epoch"] for h in run.history] == [1, 2, 3]
    assert run.steps[0]["skipped"] == 2 and all(r["skipped"] == 0 for r in run.steps[1:])
    assert all(r["drift"] > 0 for r in run.steps[1:])
    state = torch.load(tmp_path / "epoch_003.pt", weights_only=True)
    assert state["precision"]["mode"] == "fp32" and state["precision"]["fallback"]["from"] == "fp16"
    assert [f.code for f in nbt.doctor(tmp_path)][:1] == ["amp-overflow"]


def test_fp16_forward_overflow_without_fallback_stops_with_the_diagnosis(tmp_path):
    with pytest.raises(nbt.runs.NonFiniteError, match=r"fp16 overflow in the forward pass.*2: Gain") as e:
        _fit(tmp_path, gain_net(), amp_fallback=False)
    run = e.value.run
    assert run.stop.code == "amp" and "amp_fallback=True or precision='fp32'" in run.stop.message
    assert "lowering the LR or clipping will not help" in run.stop.message
    assert [f.code for f in run.findings] == ["amp-overflow"] and "stopped at step 2" in run.findings[
        0
    ].message
    assert run.steps[-1]["step"] == 2  # at the first interval, not after max_bad_steps


def test_a_real_nan_under_fp16_keeps_the_non_finite_path(tmp_path):
    with pytest.raises(nbt.runs.NonFiniteError, match="in a row") as e:
        _fit(tmp_path, gain_net(), data=Planted(set(range(48))), max_bad_steps=4)
    run = e.value.run
    assert (
        run.stop.code == "nonfinite"
        and "First non-finite on the last bad step's batch: input" in run.stop.message
    )
    assert [f.code for f in run.findings] == ["nonfinite-loss"]


def test_a_healthy_fp16_run_never_re_runs_a_step(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(guards, "fp16_range_check", lambda *a, **k: calls.append(a))
    from tests.helpers import small_cnn

    run = _fit(tmp_path, small_cnn(), epochs=2, lr=3e-2)
    assert calls == [] and run.stop is None
    assert not [f for f in run.findings if f.code.startswith(("amp", "nonfinite"))]
    assert all(r["scale"] is not None for r in run.steps)  # it really ran under the fp16 scaler


def test_fallback_means_bf16_only_where_the_gpu_has_it():
    assert Precision("fp16", "cpu").fallback_mode == "fp32"
    a100 = {"type": "cuda", "name": "NVIDIA A100", "capability": [8, 0], "bf16": True}
    t4 = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "bf16": True}  # emulated bf16
    assert (fallback_for(a100), fallback_for(t4), fallback_for({"type": "cpu"})) == ("bf16", "fp32", "fp32")


def test_a_resume_where_the_fallback_recurs_takes_that_devices_fallback():
    from nbtools.step.precision import resume_precision

    a100 = {"type": "cuda", "name": "NVIDIA A100", "capability": [8, 0], "bf16": True}
    t4 = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "bf16": True}
    fell_back = {"from": "fp16", "reason": "fp16 overflow in the forward pass", "device": a100}
    saved = {"mode": "bf16", "scaler": {}, "requested": "fp16", "resolved": "fp16", "device": a100}
    saved["fallback"] = fell_back
    mode, kept, note = resume_precision(saved, "fp16", a100)  # fp16 asked for on an A100: bf16 again
    assert (mode, kept, note) == ("bf16", fell_back, None)
    mode, kept, note = resume_precision(saved, "fp16", t4)  # the same run moved to a T4: fp32 there
    assert mode == "fp32" and kept == fell_back and "fell back to bf16 on NVIDIA A100 (sm 8.0)" in note
    p = Precision("fp16", "cpu")
    assert p.fall_back("planted") == "fp32" and p.state_dict()["fallback"]["from"] == "fp16"
