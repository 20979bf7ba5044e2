"""Faults in the fit loop (issue 14): an undefined monitored metric, a NaN streak, changed resumes."""

import numpy as np
import torch
from torch import nn

import nbtools as nbt
from tests.helpers import NoisyBlobs, small_cnn

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
    return nbt.fit(
        small_cnn(),
        train or NoisyBlobs(),
        val or NoisyBlobs(seed=1, augment=False),
        nn.CrossEntropyLoss(),
        cfg,
        run_dir,
        verbose=False,
        **kw,
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
