"""Faults in the fit loop (issue 14): an undefined monitored metric, a NaN streak, changed resumes."""

import numpy as np
import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.runs import load_checkpoint
from tests.helpers import NoisyBlobs, StopAfter, small_cnn, tiny_fit

CFG = nbt.TrainConfig(
    epochs=3, batch_size=8, lr=1e-2, log_every=2, checkpoint_every_minutes=None, precision="fp32", seed=0
)


class OneClass(NoisyBlobs):
    """A validation set whose samples are all class 0, declared through `.labels`."""

    def __init__(self, n: int = 16):
        super().__init__(n, seed=1, augment=False)
        self.y = torch.zeros(n, dtype=torch.long)
        self.labels = self.y.numpy()


def _fit(run_dir, cfg, train=None, val=None, **kw):
    kw.setdefault("verbose", False)
    return tiny_fit(
        cfg, run_dir, train=train or NoisyBlobs(), val=val or NoisyBlobs(seed=1, augment=False), **kw
    )


# --- item 3: an undefined monitored value -------------------------------------------------------
def test_auc_on_a_one_class_val_set_is_reported_and_early_stopping_does_not_crash(tmp_path):
    cfg = CFG.replace(epochs=1, monitor="val_auc", patience=2)
    run = _fit(tmp_path, cfg, val=OneClass())
    found = {f.code: f for f in run.findings}
    assert "monitor-undefined" in found
    assert (
        "all class 0" in found["monitor-undefined"].message
        or "one class" in found["monitor-undefined"].message
    )
    assert run.history[0]["val_auc"] is None and run.best_epoch is None
    # the resume runs into early stopping (2 epochs without a value) and says why, without a crash
    run = _fit(tmp_path, cfg.replace(epochs=4), val=OneClass(), resume="latest")
    assert run.stop is not None and run.stop.code == "early-stop"
    assert "never defined" in run.stop.message
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert "val_auc is undefined at epoch 2" in {f.code: f for f in run.findings}["monitor-undefined"].message


def test_a_one_class_val_set_is_reported_before_training():
    from nbtools.train.monitor import preflight_finding

    cfg = CFG.replace(monitor="val_auc")
    f = preflight_finding(cfg, torch.utils.data.Subset(OneClass(), [0, 3, 5]))
    assert f is not None and "3 samples are all class 0" in f.message and "monitor=" in f.fix
    assert preflight_finding(cfg, NoisyBlobs()) is None  # no declared labels: nothing to say
    two = OneClass()
    two.labels = np.array([0, 1] * 8)
    assert preflight_finding(cfg, two) is None
    assert preflight_finding(CFG, OneClass()) is None  # val_loss is defined on one class


# --- item 2: a NaN streak never costs the newest clean checkpoint ---------------------------------
class PlantNaN:
    """A batch_transform that writes a NaN into the first conv weight before batch `at` (once)."""

    def __init__(self, model: nn.Module, at: int):
        self.model, self.n, self.at = model, 0, at

    def __call__(self, x, y):
        self.n += 1
        if self.n == self.at:
            with torch.no_grad():
                self.model[0].weight[0, 0, 0, 0] = float("nan")
        return x, y


def test_a_nan_streak_keeps_the_newest_clean_checkpoint_and_resume_goes_to_it(tmp_path, capsys):
    # 6 steps per epoch, a NaN in a weight from step 9 on: 20 bad steps span epochs 2-5
    cfg = CFG.replace(epochs=8, max_bad_steps=20, keep_last=3, log_every=2)
    model = small_cnn()
    with pytest.raises(nbt.runs.NonFiniteError) as err:
        tiny_fit(cfg, tmp_path, model=model, batch_transform=PlantNaN(model, 9))
    files = [c.path.name for c in nbt.list_checkpoints(tmp_path)]
    assert files == ["epoch_001.pt"], files
    state = load_checkpoint(tmp_path / "epoch_001.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    message = str(err.value)
    assert "newest clean checkpoint is epoch_001.pt" in message and "intact" not in message
    assert "checkpoint-not-finite" in {f.code for f in err.value.run.findings}
    capsys.readouterr()
    run = _fit(
        tmp_path, cfg.replace(epochs=2), resume="latest", verbose=True, dashboard="text"
    )  # the NaN is not planted again
    out = capsys.readouterr()
    said = out.out + out.err
    assert "from epoch_001.pt" in said and "epoch_001.pt is the newest clean checkpoint" in said
    assert run.stop is None and [h["epoch"] for h in run.history] == [1, 2]


# --- item 7: a resume under another batch layout or other training data ---------------------------
def test_resume_refuses_other_training_data_naming_both_lengths(tmp_path):
    _fit(tmp_path, CFG.replace(epochs=1))
    with pytest.raises(ValueError, match=r"trained on 48 training samples.*has 40"):
        _fit(tmp_path, CFG.replace(epochs=2), train=NoisyBlobs(40), resume="latest")


def test_resume_mid_epoch_refuses_a_new_batch_size_or_grad_accum(tmp_path):
    cfg = CFG.replace(epochs=2, checkpoint_every_steps=2)
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path, cfg, batch_transform=StopAfter(11))  # dies in epoch 2, on its 6th batch
    mid = next(c for c in nbt.list_checkpoints(tmp_path) if c.mid_epoch)
    for change in ({"batch_size": 4}, {"grad_accum": 2}):
        with pytest.raises(ValueError, match=r"cannot resume from the mid-epoch checkpoint .*skip or repeat"):
            _fit(tmp_path, cfg.replace(epochs=2, **change), resume=mid.path)


def test_resume_at_an_epoch_boundary_takes_a_new_batch_size_as_a_config_change(tmp_path, capsys):
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path, CFG, batch_transform=StopAfter(6))  # epoch 1 of 3 done (6 steps of 8 samples)
    capsys.readouterr()
    run = _fit(tmp_path, CFG.replace(batch_size=4), resume="latest", verbose=True, dashboard="text")
    out = capsys.readouterr()
    assert "config change: batch_size: 8 -> 4" in out.out + out.err
    assert [h["step"] for h in run.history] == [6, 18, 30]  # epochs 2 and 3 took 12 steps of 4 samples
    # the LR decays to the floor at the new last step (step 30), not at the old plan's end (step 18)
    lr = {r["step"]: r["lr"]["default"] for r in run.steps}
    floor = CFG.lr * CFG.min_lr_factor
    assert abs(lr[30] - floor) < 1e-9 and lr[18] > 2 * floor
    assert lr[8] >= lr[18] >= lr[28]
