"""The CLI as a user meets it (issue 25): its messages name flags, never fit's arguments; a known error
exits with 2 and its message, no traceback (--debug adds it); Ctrl-C exits with 130 and the command that
resumes, also when the output's reader (`... | tee log`) is gone, and the run keeps its last step."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn
from torch._utils import ExceptionWrapper

import nbtools as nbt
from nbtools import cli, cli_exit
from nbtools.data.checked import SampleError
from nbtools.runs import RunLock, load_checkpoint
from nbtools.viz.progress import QuietStream, TextProgress
from tests.helpers import NoisyBlobs, small_cnn
from tests.user_files import write_nifti_folder

ROOT = Path(__file__).resolve().parents[1]
PYTHON_WORDS = ('resume="latest"', "resume='latest'", "overwrite=True", "allow_changed_data=True", "fit(...")
# 16 training steps per epoch (the smoke demo's 32 volumes, batch 2): Ctrl-C lands inside the epoch
SLOW_EPOCH = ["--smoke", "--batch-size", "2", "--epochs", "1"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", **extra}


def _cli(*args, cwd, env=None):
    cmd = [sys.executable, "-m", "nbtools", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600, env=env or _env())


def _speaks_cli(r) -> None:
    said = r.stdout + r.stderr
    assert "Traceback" not in said, said
    assert not [w for w in PYTHON_WORDS if w in said], said


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A run folder with checkpoints (nbt.fit of a small CNN: quick, and real)."""
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    cfg = nbt.TrainConfig(epochs=1, batch_size=16, checkpoint_every_minutes=None)
    nbt.fit(
        small_cnn(),
        NoisyBlobs(32),
        NoisyBlobs(16, seed=1),
        nn.CrossEntropyLoss(),
        cfg,
        run_dir,
        verbose=False,
    )
    return run_dir


@pytest.mark.slow  # three CLI processes (each imports torch)
def test_a_run_there_or_locked_is_refused_in_flags_and_debug_shows_the_traceback(plain_run, tmp_path):
    r = _cli("train", "resnet3d", "--smoke", "--run-dir", str(plain_run), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(
        f"error: {plain_run} already holds a run (found epochs 1"
    ), r
    assert "Choose one: --resume latest (or an epoch number)" in r.stderr
    assert "a new --run-dir to start another; or --overwrite to delete it" in r.stderr
    _speaks_cli(r)
    r = _cli("train", "resnet3d", "--smoke", "--run-dir", str(plain_run), "--debug", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr and "RunExistsError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith(f"error: {plain_run} already holds a run")
    with RunLock(tmp_path / "busy"):
        r = _cli("train", "resnet3d", "--smoke", "--run-dir", "busy", cwd=tmp_path)
    assert r.returncode == 2 and "is being trained into by another process: pid" in r.stderr
    assert "or train into another --run-dir" in r.stderr
    _speaks_cli(r)


def test_a_bad_config_value_names_its_flag(tmp_path, capsys):
    r = _cli("train", "resnet3d", "--smoke", "--run-dir", "r", "--set", "clip_norm=-1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --set clip_norm=-1: TrainConfig.clip_norm must be a finite number > 0")
    _speaks_cli(r)
    assert not (tmp_path / "r").exists()  # refused before anything was written
    for args, said in [  # the same code path, in this process (each subprocess imports torch again)
        (
            ["--threshold", "2"],
            "error: --threshold 2.0: TrainConfig.threshold must be a finite number >= 0.0",
        ),
        (
            ["--set", "clipnorm=1"],
            "error: --set clipnorm=1: 'clipnorm' is not a TrainConfig field; the fields",
        ),
        (["--set", "lr=1e-4"], "error: --set lr=1e-4: lr has its own flag, --lr"),
    ]:
        assert cli.main(["train", "resnet3d", "--smoke", "--run-dir", str(tmp_path / "r"), *args]) == 2
        assert capsys.readouterr().err.startswith(said)
    with pytest.raises(SystemExit):
        cli.main(["train", "resnet3d", "--run-dir", "r", "--monitor", "val_iou"])
    assert "invalid choice: 'val_iou'" in capsys.readouterr().err


@pytest.mark.slow  # two or more CLI processes that train
def test_a_truncated_volume_or_a_missing_nibabel_exits_2_naming_it_and_the_rerun_trains(tmp_path):
    vols = write_nifti_folder(tmp_path / "vols", {"benign": 6, "malignant": 6})
    write_nifti_folder(tmp_path / "val", {"benign": 2, "malignant": 2}, seed=1)
    bad = vols / "malignant" / "case_103.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # a copy cut short, as an interrupted upload leaves it
    # 12 training files in batches of 4: every one is read in epoch 1 (none in a dropped partial batch)
    train = ["train", "resnet3d", "--data", "vols", "--val", "val", "--shape", "16", "16", "16", "--smoke"]
    train += ["--batch-size", "4"]
    r = _cli(*train, "--run-dir", "runs/a", cwd=tmp_path)
    assert r.returncode == 2 and "case_103.nii.gz" in r.stderr, r.stderr
    _speaks_cli(r)
    left = {p.name for p in (tmp_path / "runs/a").glob("*")} - {"nbtools.lock"}
    bad.unlink()  # the user removes the bad file and runs the same command again
    r = _cli(*train, "--run-dir", "runs/a", "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    if "config.json" in left:  # the first run wrote its config before it met the bad file
        assert "holds no checkpoint or results, only config.json" in r.stdout
    assert nbt.runs.Run.load(tmp_path / "runs/a").epoch == 1
    # predict --threshold: the cut on the positive probability (0: every file is called positive)
    r = _cli("predict", "runs/a", "--data", "vols", "--out", "p.csv", "--threshold", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 11 and {row["predicted"] for row in rows} == {"malignant"}

    fake = tmp_path / "no_nibabel"  # an environment without nibabel
    (fake / "nibabel").mkdir(parents=True)
    (fake / "nibabel" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nibabel'\")\n"
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(fake), str(ROOT)]))
    r = _cli(*train, "--run-dir", "runs/b", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "needs nibabel" in r.stderr and "pip install 'nibabel>=5.2'" in r.stderr, (
        r.stderr
    )
    assert "raised ImportError" not in r.stderr, r.stderr  # the install hint itself, not a bad sample
    _speaks_cli(r)


READER = textwrap.dedent(
    r"""
    import re, sys
    # read the training output until epoch 1's bar shows 3 or more of its 16 batches; then either keep
    # reading to the end (a terminal) or go away (tee, ended by the same Ctrl-C) and close the pipe
    seen, stay = b"", sys.argv[1] == "stay"
    while True:
        chunk = sys.stdin.buffer.read1(4096)
        if not chunk:
            sys.exit(0 if stay else 3)
        if stay:
            sys.stdout.buffer.write(chunk)
        seen = (seen + chunk)[-4000:]
        if re.search(rb"epoch 1/1: +\d+%\|[^|]*\| ([3-9]|1[0-2])/16", seen):
            if not stay:
                sys.exit(0)
            sys.stdout.buffer.write(b"\n<<READY>>\n")
            sys.stdout.flush()
    """
)


def _train_with_ctrl_c(run_dir: str, cwd: Path, reader: str, *args) -> tuple[int, str]:
    """`python -m nbtools train ... 2>&1 | reader`: SIGINT to the trainer's process group once the reader
    saw batch 3 (with "gone", after the reader exited). Returns the trainer's exit code and what was read."""
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "nbtools", "train", "resnet3d", *SLOW_EPOCH, "--run-dir", run_dir, *args]
    trainer = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=w, stderr=w, start_new_session=True)
    out = subprocess.PIPE if reader == "stay" else subprocess.DEVNULL
    reading = subprocess.Popen([sys.executable, "-c", READER, reader], stdin=r, stdout=out)
    os.close(r)
    os.close(w)
    try:
        if reader == "stay":
            seen = b""
            while b"<<READY>>" not in seen:
                line = reading.stdout.readline()
                assert line, f"training ended before batch 3: {seen.decode(errors='replace')}"
                seen += line
        else:
            assert reading.wait(timeout=600) == 0, "training ended before batch 3"
            seen = b""
        os.killpg(trainer.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        code = trainer.wait(timeout=300)
        if reader == "stay":
            seen += reading.stdout.read()
    finally:
        for p in (trainer, reading):
            if p.poll() is None:
                p.kill()
    return code, seen.decode(errors="replace")


@pytest.mark.slow  # two or more CLI processes that train
def test_ctrl_c_prints_the_command_that_resumes_and_the_flags_took_effect(tmp_path):
    flags = ["--monitor", "val_loss", "--threshold", "0.3", "--set", "clip_norm=0.25"]
    code, said = _train_with_ctrl_c("runs/c", tmp_path, "stay", *flags, "--set", 'group_lrs={"fc": 0.01}')
    assert code == 130, said
    assert (
        "interrupted; to continue: python -m nbtools train resnet3d --run-dir runs/c --resume latest" in said
    )
    assert "to continue, --resume latest" in said  # fit's own stop message, in flags
    assert "Traceback" not in said and not [w for w in PYTHON_WORDS if w in said], said
    (kept,) = nbt.list_checkpoints(tmp_path / "runs/c")
    assert kept.mid_epoch and kept.valid and 3 <= kept.step < 16
    cfg = nbt.TrainConfig.from_dict(load_checkpoint(kept.path)["config"])
    assert (cfg.monitor, cfg.threshold, cfg.clip_norm, cfg.group_lrs) == ("val_loss", 0.3, 0.25, {"fc": 0.01})
    r = _cli(
        "train",
        "resnet3d",
        "--run-dir",
        "runs/c",
        "--resume",
        "latest",
        "--schedule",
        "restart",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (
        f"from {kept.path.name}" in r.stdout
        and "config change: schedule: 'continue' -> 'restart'" in r.stdout
    )
    assert nbt.runs.Run.load(tmp_path / "runs/c").epoch == 1


@pytest.mark.slow  # two or more CLI processes that train
def test_ctrl_c_after_the_output_reader_went_away_keeps_the_step_and_the_stop(tmp_path):
    code, _ = _train_with_ctrl_c("runs/p", tmp_path, "gone")
    # 130, as for Ctrl-C on a terminal: the dead pipe fails quietly, and Python's last flush of it too
    assert code == 130
    (kept,) = nbt.list_checkpoints(tmp_path / "runs/p")
    assert kept.mid_epoch and kept.valid and 3 <= kept.step < 16
    stop = json.loads((tmp_path / "runs/p/metrics.json").read_text())["stop"]
    assert stop["code"] == "interrupted" and kept.path.name in stop["message"]
    r = _cli("train", "resnet3d", "--run-dir", "runs/p", "--resume", "latest", cwd=tmp_path)
    assert r.returncode == 0 and f"from {kept.path.name}" in r.stdout, r.stderr
    run = nbt.runs.Run.load(tmp_path / "runs/p")
    assert run.epoch == 1 and run.stop is None and run.history[0]["step"] == 16


def test_output_to_a_reader_gone_fails_quietly(monkeypatch):
    """The progress's writes to a pipe nobody reads (EPIPE) neither raise nor stop anything."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone
    dead = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", dead)
    monkeypatch.setattr(sys, "stderr", dead)
    try:
        progress = TextProgress(epochs=2)
        progress.start_epoch(1, total_batches=4, done_batches=0)
        progress.batches_done(2)
        progress.message("interrupted: kept the last completed step")
        progress.close()
        quiet = QuietStream(dead)
        quiet.write("x" * 100_000)
        quiet.flush()
        assert quiet.broken and quiet == dead
    finally:
        monkeypatch.undo()
        with contextlib.suppress(BrokenPipeError):  # its buffer had nowhere to go
            dead.close()


def test_an_error_from_a_loader_worker_is_shown_as_its_own_message():
    """On a GPU the loader's workers read the files; torch re-raises their error with the worker's
    traceback as its message. The CLI shows the message at its end, and knows it for ours."""
    said = "1 sample could not be loaded:\n  vols/a.nii.gz: EOFError: cut short\nFix or remove that file."
    try:
        raise SampleError(said)
    except SampleError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(SampleError) as e:
        wrapped.reraise()
    assert "Original Traceback" in str(e.value)
    assert cli_exit.is_known(e.value) and cli_exit.message(e.value) == said
    try:
        int("not a number")  # a ValueError of another library's (here: this test's) code is no known error
    except ValueError as other:
        assert not cli_exit.is_known(other)
