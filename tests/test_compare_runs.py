"""Runs side by side (issue 29): `compare_runs` over real run folders made by tiny fits (finished,
stopped on NaN, interrupted by the stop button, failed, killed, resumed twice, a broken metrics.json,
records of older versions), its HTML, text and CSV, the CLI in a subprocess, and `compare_curves`."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import nbtools as nbt
from nbtools.cli import main
from nbtools.runs import RunLock
from nbtools.runs.files import LOCK_FILE
from tests.helpers import NoisyBlobs, StopAfter, small_cnn

ROOT = Path(__file__).resolve().parents[1]
# 6 batches (= steps) per epoch
CFG = nbt.TrainConfig(
    epochs=2, batch_size=8, lr=1e-2, log_every=2, checkpoint_every_minutes=None, keep_last=5
)


def _fit(run_dir, cfg=CFG, **kw):
    args = (NoisyBlobs(), NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg)
    return nbt.fit(small_cnn(), *args, run_dir, verbose=False, **kw)


class NaNAt:
    """A batch_transform that makes training batch `at` (1-based) NaN: a non-finite loss there."""

    def __init__(self, at: int):
        self.n, self.at = 0, at

    def __call__(self, x, y):
        self.n += 1
        return (x * float("nan") if self.n == self.at else x), y


class PressStop:
    """A batch_transform that sends this process SIGINT at batch `at`: the stop button."""

    def __init__(self, at: int):
        self.n, self.at = 0, at

    def __call__(self, x, y):
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return x, y


def _dead_pid() -> int:
    """The pid of a process that has ended (what a SIGKILL or a Colab disconnect leaves in a lock)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with one run folder per way a run ends; returns (root, {name: Run or None})."""
    root = tmp_path_factory.mktemp("runs")
    made = {"finished": _fit(root / "finished")}
    with pytest.raises(nbt.runs.NonFiniteError):
        _fit(root / "nan", CFG.replace(nan_policy="raise"), batch_transform=NaNAt(9))  # epoch 2, step 9
    with pytest.raises(KeyboardInterrupt):
        _fit(root / "interrupted", batch_transform=PressStop(9))
    with pytest.raises(StopAfter.Disconnect):  # an error inside fit: it records no stop
        _fit(root / "failed", batch_transform=StopAfter(8))
    shutil.copytree(root / "failed", root / "killed")  # the same state, but its process was killed:
    (root / "killed" / LOCK_FILE).write_text(  # the lock it held is still there, naming a dead process
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "then", "token": "x"})
    )
    with pytest.raises(StopAfter.Disconnect):
        _fit(root / "resumed", batch_transform=StopAfter(8))
    _fit(root / "resumed", resume="latest")  # 1st resume: from epoch 1
    made["resumed"] = _fit(root / "resumed", CFG.replace(epochs=3, lr=5e-3), resume="latest")  # 2nd: epoch 2
    made["broken"] = _fit(root / "broken")
    (root / "broken" / "metrics.json").write_text('{"config": {"epochs": 2}, "history": [')  # cut short
    (root / "not a run").mkdir()  # a folder without run files is no row
    (root / "not a run" / "notes.txt").write_text("hello")
    return root, made


def test_every_way_a_run_ends_is_one_row_with_its_status(runs):
    root, _ = runs
    with RunLock(root / "finished"):  # a live holder: this process trains into it now
        running = nbt.compare_runs(root)["finished"]
    assert running["status"] == "running" and f"pid {os.getpid()}" in running["note"]
    table = nbt.compare_runs(root)
    status = {r["run"]: r["status"] for r in table.rows}
    assert status == {
        "finished": "finished",
        "nan": "stopped (nonfinite)",
        "interrupted": "interrupted",
        "failed": "failed",
        "killed": "interrupted",
        "resumed": "finished",
        "broken": "unreadable",
    }
    assert "no longer runs" in table["killed"]["note"] and "killed" in table["killed"]["note"]
    assert "fit raised an error" in table["failed"]["note"]
    assert "non-finite" in table["nan"]["note"] and table["nan"]["epochs"] == 1
    assert table["interrupted"]["note"].startswith("interrupted: kept the last completed step")
    assert [table["failed"][k] for k in ("epochs", "planned")] == [1, 2]


def test_a_row_holds_what_the_run_recorded(runs):
    root, made = runs
    table = nbt.compare_runs(root)
    row, run = table["resumed"], made["resumed"]
    assert (row["epochs"], row["planned"], row["resumes"]) == (3, 3, 2)
    assert [s["epoch"] for s in run.sessions] == [0, 1, 2] and run.sessions[1]["checkpoint"] == "epoch_001.pt"
    assert row["best_epoch"] == run.best_epoch and row["monitor"] == "val_loss"
    assert row["best_value"] == run.best()["val_loss"] and row["last_value"] == run.history[-1]["val_loss"]
    assert row["open_findings"] == [f.code for f in run.findings if f.is_open]
    assert row["seconds"] == pytest.approx(sum(h["seconds"] for h in run.history))
    assert row["task"] == "classification" and row["checkpoints"] == 3
    assert table["finished"]["resumes"] == 0


def test_config_differences_only_against_the_oldest_or_the_named_baseline(runs):
    root, _ = runs
    table = nbt.compare_runs(root)
    assert table.baseline == "finished" and table.rows[0]["run"] == "finished"  # the oldest, first
    assert table["finished"]["config_diff"] == {}
    assert table["resumed"]["config_diff"] == {"epochs": (2, 3), "lr": (0.01, 0.005)}
    assert table["nan"]["config_diff"] == {"nan_policy": ("skip", "raise")}
    assert table["interrupted"]["config_diff"] == {}
    named = nbt.compare_runs(root, baseline="resumed")
    assert named["finished"]["config_diff"] == {"epochs": (3, 2), "lr": (0.005, 0.01)}
    with pytest.raises(ValueError, match=r"baseline='nope' is not one of the runs compared \(finished, "):
        nbt.compare_runs(root, baseline="nope")


def test_a_broken_or_older_record_is_a_row_that_says_so(runs, tmp_path):
    root, made = runs
    broken = nbt.compare_runs(root)["broken"]
    assert "metrics.json cannot be read (JSONDecodeError" in broken["note"]
    assert "checkpoints hold the history up to epoch 2" in broken["note"] and broken["planned"] == 2
    # an older version's record: no sessions, the stop as a sentence, findings without a status
    old = made["finished"].to_dict()
    for key in ("sessions", "stop", "task", "meta", "version"):
        del old[key]
    old["stopped"] = "early stopping: val_loss did not improve"
    old["findings"] = [{"code": "overfitting", "message": "m", "fix": "f"}]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    (tmp_path / "other").mkdir()  # a record of another shape altogether
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({"config": {}, "history": {"1": 0.5}}))
    table = nbt.compare_runs([root / "finished", tmp_path / "old", tmp_path / "other", tmp_path / "gone"])
    assert [r["run"] for r in table.rows] == ["finished", "old", "other", "gone"]  # a list keeps its order
    assert table["old"]["status"] == "stopped (early-stop)" and table["old"]["resumes"] is None
    assert table["old"]["open_findings"] == ["overfitting"] and table["old"]["config_diff"] == {}
    assert table["other"]["status"] == "unreadable" and "another version" in table["other"]["note"]
    assert table["gone"]["status"] == "unreadable" and "does not exist" in table["gone"]["note"]
    assert "old" in str(table) and "other" in table._repr_html_()


def test_html_text_and_csv_show_every_run_and_nothing_live(runs, tmp_path):
    root, _ = runs
    table = nbt.compare_runs(root)
    page = table._repr_html_()
    assert page.startswith("<table>") and "<script" not in page.lower() and "widget" not in page.lower()
    assert all(f"<td style='text-align:left'>{name}" in page for name in ("nan", "killed", "broken"))
    assert "epochs 2 -&gt; 3" in page  # escaped
    text = str(table)
    assert text.splitlines()[0].split()[:3] == ["run", "task", "status"] and repr(table) == text
    assert "resumed: config vs finished: epochs 2 -> 3, lr 0.01 -> 0.005" in text
    path = table.to_csv(tmp_path / "runs.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [r["run"] for r in table.rows]
    resumed = next(r for r in rows if r["run"] == "resumed")
    assert resumed["resumes"] == "2" and resumed["config_diff"] == "epochs 2 -> 3, lr 0.01 -> 0.005"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]  # no temp file left behind
    empty = nbt.compare_runs(root / "not a run")
    assert len(empty) == 0 and "no run folders in" in str(empty)


def test_cli_runs_prints_the_table_and_writes_the_csv(runs, tmp_path, capsys):
    root, _ = runs
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "nbtools", "runs", str(root), "--baseline", "nan", "--csv", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "nan (baseline)" in r.stdout and "stopped (nonfinite)" in r.stdout and "unreadable" in r.stdout
    assert f"wrote 7 rows to {out}" in r.stdout and len(out.read_text().splitlines()) == 8
    assert main(["runs", str(root), "--baseline", "x"]) == 2  # in-process: the message, the exit code
    err = capsys.readouterr().err
    assert "--baseline" in err and "(finished, " in err
    assert main(["runs", str(tmp_path / "missing")]) == 2 and "is not a folder" in capsys.readouterr().err


def test_compare_curves_draws_one_line_per_run_and_circles_the_resumes(runs, tmp_path):
    root, made = runs
    fig = nbt.viz.compare_curves(root, "val_loss", path=tmp_path / "val_loss.png")
    assert (tmp_path / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    drawn = {line.get_label(): line for line in ax.lines}
    # one line per readable run (broken's metrics.json is not: it is named under the plot)
    assert set(drawn) == {"finished", "nan", "interrupted", "failed", "killed", "resumed"}
    assert list(drawn["resumed"].get_xdata()) == [1, 2, 3]
    assert list(drawn["resumed"].get_ydata()) == [h["val_loss"] for h in made["resumed"].history]
    circles = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    resumed_at = [[e, made["resumed"].history[e - 1]["val_loss"]] for e in (1, 2)]
    assert len(circles) == 1
    np.testing.assert_allclose(circles[0], resumed_at, rtol=1e-12)
    assert "resumed here" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "not drawn: broken (metrics.json unreadable)" in [t.get_text() for t in fig.texts]
    by_step = nbt.viz.compare_curves([made["resumed"]], "loss", x="step")  # telemetry, by global step
    assert len(by_step.axes[0].lines) == 1 and list(by_step.axes[0].collections[0].get_offsets()[:, 0]) == [
        6,
        12,
    ]
    with pytest.raises(ValueError, match="no run records 'val_dice'"):
        nbt.viz.compare_curves(root, "val_dice")
