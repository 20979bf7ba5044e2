"""Findings carry their status: a failure that passed is shown as resolved (with its epoch), after
the open ones, live in fit, in the doctor, the dashboard and the CLI."""

import json

import torch
from torch import nn

import nbtools as nbt
from nbtools.cli import main as cli
from nbtools.cli import print_findings
from nbtools.runs import Finding, Run
from nbtools.viz.dashboard import Dashboard
from tests.helpers import small_cnn, tiny_fit


class HeadFirst(nn.Module):
    """A frozen body under a trainable bias (unfreeze={4: "body"}): the bias alone learns the prior,
    so epochs 1-3 predict the majority class for everything; from epoch 4 the body learns."""

    def __init__(self):
        super().__init__()
        self.body = small_cnn()
        self.offset = nn.Parameter(torch.tensor([2.0, 0.0]))

    def forward(self, x):
        return self.body(x) + self.offset


def _collapse_then_learn(tmp_path, **kw):
    cfg = nbt.TrainConfig(
        epochs=6, batch_size=8, lr=1e-2, unfreeze={4: "body"}, log_every=3, checkpoint_every_minutes=None
    )
    return tiny_fit(cfg, tmp_path, model=HeadFirst(), verbose=True, **kw)


def test_a_collapse_that_passed_is_resolved_live_in_the_doctor_and_the_cli(tmp_path, capsys):
    run = _collapse_then_learn(tmp_path, dashboard="text")
    assert [h["val_pred_pos_rate"] for h in run.history[:3]] == [0.0, 0.0, 0.0]
    assert run.history[-1]["val_auc"] > 0.8  # it learned once the body trained
    [c] = [f for f in run.findings if f.code == "class-collapse"]
    assert (c.status, c.epoch, c.resolved_epoch) == ("resolved", 3, 4)
    out = capsys.readouterr().out
    # shown when it was raised, and once more when it passed
    assert "[class-collapse] (epoch 3) epochs 1-3" in out
    assert "[class-collapse] (epoch 3; resolved at epoch 4) epochs 1-3" in out
    # the doctor re-derives the same status from metrics.json; a resolved-only run exits 0
    assert nbt.doctor(tmp_path) == run.findings
    assert cli(["doctor", str(tmp_path)]) == 0
    assert "resolved at epoch 4" in capsys.readouterr().out


def test_open_findings_come_first_and_resolved_ones_say_so(tmp_path, capsys):
    resolved = Finding("class-collapse", "epochs 1-3: ...", "fix", epoch=3).resolved(4)
    still = Finding("nonfinite-loss", "3 optimizer steps skipped", "fix", epoch=5)
    run = Run(tmp_path, nbt.TrainConfig(), findings=[resolved, still])
    run.save()
    assert [f.code for f in nbt.doctor(tmp_path)] == ["nonfinite-loss", "class-collapse"]
    print_findings(run.findings)  # the CLI's end summary after `train`
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "findings: 1 open, 1 resolved"
    assert lines[1].startswith("[nonfinite-loss] (epoch 5)")
    assert lines[-2].startswith("[class-collapse] (epoch 3; resolved at epoch 4)")
    assert cli(["doctor", str(tmp_path)]) == 1  # something is still open


def test_the_dashboard_replaces_a_finding_by_its_resolved_self():
    board = Dashboard(epochs=6, display=False)
    collapse = Finding("class-collapse", "epochs 1-3: all class 0", "fix", epoch=3)
    board.finding(collapse)
    board.finding(Finding("frozen-weights", "weights moved 0", "fix", epoch=4))
    board.finding(collapse.resolved(4))
    box = board.findings_box.value
    assert box.count("[class-collapse]") == 1 and "resolved at epoch 4:" in box
    assert box.index("[frozen-weights]") < box.index("[class-collapse]")  # open first
    board.close()
    assert board.bar.bar_style == "warning"  # frozen-weights is open
    calm = Dashboard(epochs=6, display=False)
    calm.finding(collapse.resolved(4))
    calm.close()
    assert calm.bar.bar_style == "success"


def test_findings_saved_before_they_had_a_status_load_as_open(tmp_path):
    run = Run(tmp_path, nbt.TrainConfig(), findings=[Finding("frozen-weights", "m", "f", epoch=2)])
    run.save()
    d = json.loads((tmp_path / "metrics.json").read_text())
    for f in d["findings"]:
        del f["status"], f["resolved_epoch"]
    del d["task"], d["version"]  # as metrics.json was written then
    (tmp_path / "metrics.json").write_text(json.dumps(d))
    [f] = Run.load(tmp_path).findings
    assert f.is_open and f.resolved_epoch is None and Run.load(tmp_path).task == {}


def test_a_saved_finding_whose_rule_no_longer_fires_is_resolved_at_the_next_epoch(tmp_path):
    """A resumed run's stop is cleared: the early stop its stopped-too-early finding was about is over."""
    from nbtools.diagnose import rules

    history = [{"epoch": e, "val_loss": 0.5, "train_loss": 0.5} for e in range(1, 7)]
    early = Finding("stopped-too-early", "early stopping at epoch 4 ...", "fix", epoch=4)
    run = Run(tmp_path, nbt.TrainConfig(), history=history, findings=[early])  # stop None: resumed
    assert rules.stopped_too_early(run) is None
    [f] = [f for f in rules.epoch_findings(run) if f.code == "stopped-too-early"]
    assert f.status == "resolved" and f.resolved_epoch == 5
    assert nbt.doctor(run) == [f]
