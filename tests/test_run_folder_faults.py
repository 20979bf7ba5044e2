"""Run folders under the faults of issue 14: flipped bytes, a marker without a model, a finished run
without epoch checkpoints, resume="last", "~" and relative folders."""

import logging
import shutil

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.runs import checkpoints as ckpt
from nbtools.train.loader import TrainBatches
from tests.helpers import NoisyBlobs, small_cnn

CFG = nbt.TrainConfig(epochs=2, batch_size=8, checkpoint_every_minutes=None)


def _fit(run_dir, cfg=CFG, **kw):
    args = (NoisyBlobs(), NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg)
    return nbt.fit(small_cnn(), *args, run_dir, **{"verbose": False, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained")
    _fit(run_dir)
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def _flip_a_weight(path, key="5.weight"):
    """Change one byte of the stored model weight `key` in place: its first float's exponent."""
    raw = torch.load(path, weights_only=True)["model"][key].numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) < 0
    data[at + 3] ^= 0x40  # the exponent's top bit: a weight of 0.08 becomes 2.7e37
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_weight_are_refused_and_latest_falls_back(run_dir, caplog, capsys):
    newest = run_dir / "epoch_002.pt"
    before = torch.load(newest, weights_only=True)["model"]["5.weight"][0, 0].item()
    _flip_a_weight(newest)
    after = torch.load(newest, weights_only=True)["model"]["5.weight"][0, 0].item()
    assert abs(after) > 1000 * abs(before)  # torch.load alone takes the changed weight without a word

    listing = nbt.list_checkpoints(run_dir)
    assert [c.valid for c in listing] == [True, False]
    assert "does not match its CRC-32" in listing[1].error
    with pytest.raises(
        ckpt.CheckpointError, match=r"epoch_002\.pt is truncated or corrupt: record .* CRC-32"
    ):
        ckpt.load_checkpoint(newest)
    with pytest.raises(ckpt.CheckpointError, match=r"epoch_002\.pt"):
        ckpt.find_checkpoint(run_dir, 2)
    with caplog.at_level(logging.WARNING):
        assert ckpt.find_checkpoint(run_dir, "latest").path.name == "epoch_001.pt"
    assert "skipping" in caplog.text and "epoch_002.pt" in caplog.text and "CRC-32" in caplog.text
    run = _fit(run_dir, CFG.replace(epochs=3), resume="latest")
    assert [h["epoch"] for h in run.history] == [1, 2, 3]  # epoch 2 trained again from epoch 1's state


def test_a_checkpoint_with_the_marker_but_no_model_is_listed_invalid(run_dir, caplog):
    torch.save({"format": ckpt.FORMAT, "epoch": 3, "step": 18, "batch": 0}, run_dir / "epoch_003.pt")
    listing = nbt.list_checkpoints(run_dir)
    assert [(c.epoch, c.valid) for c in listing] == [(1, True), (2, True), (3, False)]
    assert "has the nbtools checkpoint marker but no config, model" in listing[2].error
    with pytest.raises(ckpt.CheckpointError, match=r"epoch_003\.pt has the nbtools checkpoint marker"):
        ckpt.find_checkpoint(run_dir, 3)
    assert ckpt.find_checkpoint(run_dir, "latest").path.name == "epoch_002.pt"


# config.json alone is no run: see test_a_run_that_kept_nothing_is_replaced_and_said
@pytest.mark.parametrize("kept", [None, "metrics.json", "last.pt", "best.pt"])
def test_a_finished_run_without_epoch_checkpoints_is_not_trained_over(run_dir, kept):
    for p in run_dir.glob("epoch_*.pt"):
        p.unlink()  # deleted to save Drive quota
    if kept is not None:
        for p in run_dir.iterdir():
            if p.name != kept:
                p.unlink()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(
        nbt.runs.RunExistsError, match=r"already holds a run .no epoch checkpoints, but "
    ) as e:
        _fit(run_dir)
    assert (kept or "best.pt") in str(e.value) and "overwrite=True" in str(e.value)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing touched
    _fit(run_dir, overwrite=True)  # the way out the message names
    assert nbt.list_checkpoints(run_dir)[-1].epoch == 2


def test_resume_last_names_the_choices(run_dir):
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    with pytest.raises(
        ValueError, match=r"resume='last' is not a choice: resume takes None, \"latest\""
    ) as e:
        _fit(run_dir, resume="last")
    assert "found epochs 1-2" in str(e.value) and "last.pt holds model weights only" in str(e.value)
    with pytest.raises(ValueError, match=r"resume='newest' is not a choice"):
        _fit(run_dir, resume="newest")
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_tilde_in_run_dir_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run = _fit("~/runs/demo", CFG.replace(epochs=1))
    assert run.run_dir == tmp_path / "home" / "runs" / "demo"
    assert (tmp_path / "home/runs/demo/epoch_001.pt").is_file() and not (tmp_path / "~").exists()
    assert [c.epoch for c in nbt.list_checkpoints("~/runs/demo")] == [1]
    assert nbt.runs.Run.load("~/runs/demo").history[0]["epoch"] == 1


def test_messages_name_the_absolute_folder_after_cd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("runs/rel", CFG.replace(epochs=1))
    absolute = str(tmp_path / "runs" / "rel")
    with pytest.raises(nbt.runs.RunExistsError, match=f"^{absolute} already holds a run"):
        _fit("runs/rel")
    with pytest.raises(FileNotFoundError, match=f"no checkpoint for epoch 5 in {absolute};"):
        _fit("runs/rel", resume=5)
    with pytest.raises(FileNotFoundError, match=f"^{absolute}/nothing/metrics.json not found"):
        nbt.runs.Run.load("runs/rel/nothing")


def test_report_on_a_bad_file_names_the_file_and_the_cause(run_dir):
    (run_dir / "best_val.pt").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(
        ValueError, match=r"best_val\.pt cannot be read \((UnpicklingError|RuntimeError)"
    ) as e:
        nbt.viz.report(run_dir, save=False)
    assert str(run_dir / "best_val.pt") in str(e.value) and "delete it" in str(e.value)
    with pytest.raises(ValueError, match=r"report takes a Run or a run folder; .*best\.pt is a file"):
        nbt.viz.report(run_dir / "best.pt", save=False)


def test_a_checkpoint_from_another_run_folder_is_said_or_refused(trained, run_dir, tmp_path, capsys):
    other = run_dir / "epoch_002.pt"
    assert torch.load(other, weights_only=True)["run_dir"] == str(trained)  # where it was written
    fresh = tmp_path / "fresh"
    run = _fit(fresh, CFG.replace(epochs=3), resume=other, verbose=True, dashboard="text")
    out = capsys.readouterr()
    said = out.out + out.err
    assert f"{other} is a checkpoint of the run in" in said and f"continues in {fresh}" in said
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    # a folder with a run of its own is not taken over by another run's checkpoint
    own = tmp_path / "own"
    _fit(own, CFG.replace(epochs=1))
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    with pytest.raises(
        nbt.runs.RunExistsError, match=rf"{own} holds a run of its own, and {other} is a checkpoint"
    ):
        _fit(own, CFG.replace(epochs=3), resume=other)
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before


def test_a_folder_of_the_users_own_pictures_is_no_run(tmp_path):
    (tmp_path / "scan_001.png").write_bytes(b"\x89PNG")
    _fit(tmp_path, CFG.replace(epochs=1))
    assert (tmp_path / "scan_001.png").read_bytes() == b"\x89PNG"


class CorruptAt(NoisyBlobs):
    """NoisyBlobs whose sample `bad` cannot be read, as a truncated file in a user's folder."""

    def __init__(self, bad: int, **kw):
        super().__init__(**kw)
        self.bad = bad

    def __getitem__(self, i):
        if i == self.bad:
            raise OSError(f"case_{i:03d}.nii.gz: compressed file ended before the end-of-stream marker")
        return super().__getitem__(i)


def test_a_run_that_kept_nothing_is_replaced_and_said(tmp_path, capsys):
    """A run that failed on a bad file in epoch 1 leaves config.json (and TensorBoard events) but no
    checkpoint; once the file is fixed, the same call trains there and says what it replaces."""
    run_dir = tmp_path / "run"
    cfg = CFG.replace(epochs=1, batch_size=4)
    bad = list(TrainBatches(48, 4, cfg.seed, 1, 0, 1))[2][0]  # in epoch 1's third batch
    args = (NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg, run_dir)
    with pytest.raises(ValueError, match="case_0"):
        nbt.fit(small_cnn(), CorruptAt(bad), *args, verbose=False)
    left = {p.name for p in run_dir.iterdir()}
    assert "config.json" in left and not nbt.list_checkpoints(run_dir)
    (run_dir / "metrics.json").write_text('{"history": [], "steps": []}')  # an empty record, too
    (run_dir / "scan.png").write_bytes(b"\x89PNG")  # the user's own file in the folder
    capsys.readouterr()
    run = nbt.fit(small_cnn(), NoisyBlobs(), *args, verbose=True, dashboard="text")
    said = capsys.readouterr().out
    assert f"{run_dir} holds no checkpoint or results, only config.json, metrics.json" in said
    assert "starting a new run there, in their place" in said
    assert run.epoch == 1 and [c.epoch for c in nbt.list_checkpoints(run_dir)] == [1]
    assert (run_dir / "scan.png").read_bytes() == b"\x89PNG"
    # a run with a history in metrics.json is a run, even without any checkpoint
    for p in run_dir.glob("*.pt"):
        p.unlink()
    with pytest.raises(nbt.runs.RunExistsError, match=r"no epoch checkpoints, but metrics\.json"):
        nbt.fit(small_cnn(), NoisyBlobs(), *args, verbose=False)
