"""An epoch's findings are recorded before its checkpoint is written, so the checkpoint holds them and
a resume from it continues with them (they were once recorded after it, and a resume lost them)."""

from __future__ import annotations

import json

import torch

import nbtools as nbt
from nbtools.runs import load_checkpoint
from tests.helpers import NoisyBlobs, tiny_fit


def _one_class_val() -> NoisyBlobs:
    val = NoisyBlobs(n=16, seed=1, augment=False)
    val.y = torch.zeros_like(val.y)  # AUC is undefined on it: a monitor-undefined finding every epoch
    return val


def test_the_epoch_checkpoint_holds_the_epochs_findings_and_a_resume_keeps_them(tmp_path, capsys):
    cfg = nbt.TrainConfig(epochs=2, batch_size=8, monitor="val_auc", seed=0)
    tiny_fit(cfg, tmp_path, train=NoisyBlobs(n=16), val=_one_class_val())
    saved = json.loads((tmp_path / "metrics.json").read_text())["findings"]
    [undefined] = [f for f in saved if f["code"] == "monitor-undefined"]
    assert undefined["epoch"] == 2 and "undefined at epoch 2" in undefined["message"]
    assert load_checkpoint(tmp_path / "epoch_002.pt")["run"]["findings"] == saved
    assert load_checkpoint(tmp_path / "epoch_001.pt")["run"]["findings"][0]["epoch"] == 1

    run = tiny_fit(
        cfg.replace(epochs=3), tmp_path, train=NoisyBlobs(n=16), val=_one_class_val(), resume=1, verbose=True
    )
    out = capsys.readouterr()
    assert "findings so far: 1 open" in out.out + out.err
    assert [f.epoch for f in run.findings if f.code == "monitor-undefined"] == [3]
