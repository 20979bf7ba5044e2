"""A resume takes the precision the new config and the device call for; an fp32 fallback stays only
where it would recur. Checkpoints saved on another device load here (map_location)."""

import pytest
import torch

import nbtools as nbt
from nbtools.runs.upgrade import upgrade_precision
from nbtools.step import Precision
from nbtools.step.precision import resume_precision
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit

CPU = {"type": "cpu"}
T4 = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "bf16": True}  # bf16 emulated below sm 8
V100 = {"type": "cuda", "name": "Tesla V100", "capability": [7, 0], "bf16": False}
A100 = {"type": "cuda", "name": "NVIDIA A100", "capability": [8, 0], "bf16": True}
FELL_BACK_ON_T4 = {"from": "fp16", "reason": "fp16 GradScaler skipped 30 of the last 50 steps", "device": T4}


def saved(mode, device, requested="auto", fallback=None):
    resolved = "fp16" if fallback else mode
    return {"mode": mode, "scaler": {}, "requested": requested, "resolved": resolved, "device": device,
            "fallback": fallback}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "requested", "device", "mode", "kept"),
    [
        (saved("fp32", CPU), "auto", T4, "fp16", False),  # began on a CPU: a T4 runs fp16 ...
        (saved("fp32", CPU), "auto", A100, "bf16", False),  # ... an A100 bf16
        (saved("bf16", A100), "auto", CPU, "fp32", False),  # back to a CPU
        (saved("fp16", T4), "auto", A100, "bf16", False),
        (saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", T4, "fp32", True),  # it would fall back again
        (saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", V100, "fp32", True),  # fp16 there too
        (saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", A100, "bf16", True),  # no fp16: bf16
        (saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", CPU, "fp32", True),  # carried on
        (saved("fp32", T4, fallback=FELL_BACK_ON_T4), "bf16", T4, "bf16", False),  # the config chose anew
        (saved("fp32", T4, "fp16", FELL_BACK_ON_T4), "fp16", T4, "fp32", True),
        (upgrade_precision({"mode": "fp32", "scaler": {}}), "auto", T4, "fp16", False),  # old: no evidence
        (upgrade_precision({"mode": "fp16", "scaler": {}}), "auto", CPU, "fp32", False),
    ],
)
def test_the_resume_decision(state, requested, device, mode, kept):
    got, fallback, _ = resume_precision(state, requested, device)
    assert got == mode and (fallback is not None) == kept


def test_a_fallback_is_kept_across_a_cpu_session():
    # T4 (falls back) -> CPU -> T4 again: the CPU session's state still holds the T4's fallback
    mode, fallback, _ = resume_precision(saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", CPU)
    on_cpu = saved(mode, CPU, fallback=fallback)
    assert resume_precision(on_cpu, "auto", T4)[:2] == ("fp32", FELL_BACK_ON_T4)


def test_the_notes_say_what_changed_and_why():
    _, _, note = resume_precision(saved("fp32", CPU), "auto", A100)
    assert "trained in fp32 on cpu" in note and "continuing in bf16 on NVIDIA A100 (sm 8.0)" in note
    _, _, note = resume_precision(saved("fp32", T4, fallback=FELL_BACK_ON_T4), "auto", V100)
    assert "fell back to fp32 on Tesla T4 (sm 7.5)" in note and "skipped 30 of the last 50" in note
    assert resume_precision(saved("fp32", CPU), "auto", CPU)[2] is None  # nothing changed: nothing said


def test_the_state_records_request_resolution_device_and_fallback():
    p = Precision("fp16", "cpu")
    state = p.state_dict()
    assert state["requested"] == "fp16" and state["resolved"] == "fp16" and state["device"] == CPU
    assert state["fallback"] is None and state["scaler"]
    p.fall_back("planted")
    state = p.state_dict()
    assert state["mode"] == "fp32" and state["fallback"] == {
        "from": "fp16",
        "reason": "planted",
        "device": CPU,
    }
    again = Precision("fp16", "cpu")
    again.load_state_dict(state)
    assert again.mode == "fp32" and not again.scaler.is_enabled() and again.fallback == state["fallback"]
    chosen = Precision("bf16", "cpu")
    chosen.load_state_dict(state)
    assert chosen.mode == "bf16" and chosen.fallback is None


def _fit(tmp_path, epochs, precision, resume=None):
    cfg = nbt.TrainConfig(
        epochs=epochs, batch_size=8, precision=precision, log_every=3, checkpoint_every_minutes=None
    )
    model = small_cnn()
    run = tiny_fit(cfg, tmp_path, model=model, val=NoisyBlobs(seed=1), resume=resume)
    return run, torch.load(tmp_path / f"epoch_{epochs:03d}.pt", weights_only=True)["precision"]


def test_a_run_begun_in_fp32_resumes_in_the_precision_the_new_config_asks_for(tmp_path):
    # Old code kept fp32 for good ("saved after an fp32 fallback"), the trap of a CPU run resumed on a GPU.
    _, first = _fit(tmp_path, 1, "fp32")
    _, resumed = _fit(tmp_path, 2, "bf16", resume="latest")
    assert first["mode"] == "fp32" and resumed["mode"] == "bf16"
    assert first["fallback"] is None and resumed["requested"] == "bf16"


def _tag_storages_as_cuda(monkeypatch):
    """torch.save writes each storage's device; here every one claims cuda:0, as on a Colab GPU."""
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks loading CUDA-saved tensors without CUDA")
def test_a_checkpoint_saved_on_a_gpu_resumes_and_reports_on_a_cpu(tmp_path, monkeypatch):
    _fit(tmp_path, 1, "auto")
    for name in ("epoch_001.pt", "best_val.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        with monkeypatch.context() as m:
            _tag_storages_as_cuda(m)
            torch.save(state, tmp_path / name)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a load without map_location does here
        torch.load(tmp_path / "epoch_001.pt", weights_only=True)
    assert [c.valid for c in nbt.list_checkpoints(tmp_path)] == [True]
    report = nbt.viz.report(tmp_path, save=False)  # best_val.pt: the confusion matrix and ROC
    assert "roc_curve" in report.figures
    run, state = _fit(tmp_path, 2, "auto", resume="latest")
    assert [h["epoch"] for h in run.history] == [1, 2] and state["mode"] == "fp32"
