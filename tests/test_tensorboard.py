"""TensorBoard event files in the run folder, read back as TensorBoard reads them: every telemetry and
epoch record at its step, each step once across resumes (also after a disconnect past the last
checkpoint), deleted by overwrite=True; without tensorboard, fit says so once and trains."""

import logging
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nbtools as nbt
from nbtools.train import tensorboard as tb
from tests.helpers import NoisyBlobs, StopAfter, tiny_fit

CFG = nbt.TrainConfig(epochs=2, batch_size=8, log_every=2, checkpoint_every_minutes=None, keep_last=5)


def _fit(run_dir, cfg=CFG, **kw):
    return tiny_fit(cfg, run_dir, val=NoisyBlobs(seed=1), **kw)


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_once_each(run, got):
    """Each step once, in order, with the final run's values."""
    for tag, key in (("train/loss", "loss"), ("train/grad_norm", "grad_norm")):
        expected = [(r["step"], r[key]) for r in run.steps if r[key] is not None]
        assert [s for s, _ in got[tag]] == [s for s, _ in expected], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    assert [s for s, _ in got["val/loss"]] == [h["step"] for h in run.history]
    assert [v for _, v in got["val/auc"]] == pytest.approx([h["val_auc"] for h in run.history], rel=1e-6)


def test_fit_writes_the_telemetry_and_epoch_records(tmp_path):
    run = _fit(tmp_path)
    got = scalars(tmp_path)
    assert {"train/loss", "train/grad_norm_max", "train/skipped_steps", "train/weight_drift_rel"} <= set(got)
    assert {"grad_norm/default", "lr/default", "val/loss", "val/f1", "epoch/train_loss"} <= set(got)
    assert "amp/scale" not in got  # fp32: no GradScaler, nothing written for a None
    assert_once_each(run, got)
    assert [v for _, v in got["lr/default"]] == pytest.approx([r["lr"]["default"] for r in run.steps])


def test_a_resume_after_a_disconnect_shows_each_step_once(tmp_path):
    per_epoch = 48 // 8
    with pytest.raises(StopAfter.Disconnect):  # killed in epoch 3, after steps its checkpoint lacks
        _fit(tmp_path, CFG.replace(epochs=3), batch_transform=StopAfter(2 * per_epoch + 5))
    assert max(s for s, _ in scalars(tmp_path)["train/loss"]) > 2 * per_epoch
    run = _fit(tmp_path, CFG.replace(epochs=3, lr=5e-4), resume="latest")  # new values from epoch 3 on
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert_once_each(run, scalars(tmp_path))


def test_a_resume_from_an_earlier_epoch_drops_what_came_after_it(tmp_path):
    _fit(tmp_path, CFG.replace(epochs=3))
    run = _fit(tmp_path, CFG.replace(epochs=3, lr=5e-4), resume=1)
    assert_once_each(run, scalars(tmp_path))


def test_overwrite_deletes_the_event_files(tmp_path):
    _fit(tmp_path, CFG.replace(epochs=1))
    (old,) = tmp_path.glob("events.out.tfevents.*")
    _fit(tmp_path, CFG.replace(epochs=1), overwrite=True)
    assert old not in list(tmp_path.glob("events.out.tfevents.*"))


def test_without_tensorboard_fit_trains_and_says_so_once_quietly(tmp_path, monkeypatch, caplog):
    """Not installed: said once per process at INFO (no warning on every run of a user who never
    installed it), and the runs train."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    tb._tensorboard.cache_clear()
    tb._say_not_installed.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="nbtools.train.tensorboard"):
            _fit(tmp_path / "a", CFG.replace(epochs=1))
            run = _fit(tmp_path / "b", CFG.replace(epochs=1))
    finally:
        tb._tensorboard.cache_clear()
        tb._say_not_installed.cache_clear()
    assert len(run.history) == 1 and not list(tmp_path.rglob("events.out.tfevents.*"))
    said = [r for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO, said
    assert "pip install tensorboard" in said[0].getMessage()


def test_resuming_a_run_with_event_files_without_tensorboard_warns_before_the_first_bar(
    tmp_path, monkeypatch, capfd
):
    """Where it matters (the run's event files would stop at the earlier session) it is a warning, and
    fit says it when it starts, on a line of its own, not in the middle of a progress bar."""
    _fit(tmp_path, CFG.replace(epochs=1))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    tb._tensorboard.cache_clear()
    handler = logging.StreamHandler(sys.stderr)  # as the CLI shows warnings: on stderr, as tqdm draws
    logging.getLogger("nbtools").addHandler(handler)
    capfd.readouterr()
    try:
        _fit(tmp_path, resume="latest", dashboard="text", verbose=True)
    finally:
        logging.getLogger("nbtools").removeHandler(handler)
        tb._tensorboard.cache_clear()
    err = capfd.readouterr().err
    warning = err.index("holds TensorBoard event files, but tensorboard does not import here")
    assert "epoch 2/2" in err and "epoch 2/2" not in err[:warning] and "\r" not in err[:warning], err
    line_start = err.rfind("\n", 0, warning) + 1
    assert err[line_start:warning] == f"{tmp_path} ", "a line of its own"
