"""TrainConfig(mlflow=...) against a real local store (SQLite in tmp_path), read back with MLflow's own
client: params once, every record at its step, one MLflow run across a disconnect and two resumes with each
step once, findings as tags, artifacts; without mlflow, or with a store that fails, fit trains and says so."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient  # requirements-dev.txt: these tests must run, not skip
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.train import mlflow_run
from tests.helpers import NoisyBlobs, StopAfter, tiny_fit

PER_EPOCH = 48 // 8  # optimizer steps per epoch of the tiny task
CFG = nbt.TrainConfig(epochs=2, batch_size=8, log_every=2, checkpoint_every_minutes=None, keep_last=5)
LOGGER = "nbtools.train"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An SQLite store with MLflow's tables: creating them takes ~9 s, a copy ~0.1 s."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, empty_store):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def _fit(run_dir, cfg, **kw):
    return tiny_fit(cfg, run_dir, val=NoisyBlobs(seed=1), **kw)


def run_id(run_dir) -> str:
    return json.loads((run_dir / "mlflow.json").read_text())["run_id"]


def history(client, rid, key) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(rid, key)]


def assert_each_step_once(client, rid, run):
    """The MLflow run's curves are the final run's: each step once, in order, with its values."""
    for key, field in (("train/loss", "loss"), ("train/grad_norm", "grad_norm")):
        got = sorted(history(client, rid, key))
        assert [s for s, _ in got] == [r["step"] for r in run.steps], key
        assert [v for _, v in got] == pytest.approx([r[field] for r in run.steps], rel=1e-6), key
    got = sorted(history(client, rid, "val/loss"))
    assert [s for s, _ in got] == [h["step"] for h in run.history]
    assert [v for _, v in got] == pytest.approx([h["val_loss"] for h in run.history], rel=1e-6)


class Scaled(Dataset):
    """NoisyBlobs in 0-255: the input-out-of-range finding on the first batch."""

    def __init__(self):
        self.base = NoisyBlobs(augment=False)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x * 255.0, y


def test_fit_logs_params_once_metrics_at_their_steps_findings_and_artifacts(tmp_path, store, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where MLflow would put a SQLite store's artifacts (./mlruns)
    cfg = CFG.replace(mlflow={"tracking_uri": store, "experiment": "seed001"}, group_lrs={"0": 2e-3})
    run = _fit(tmp_path / "run", cfg, train=Scaled())
    client, rid = MlflowClient(store), run_id(tmp_path / "run")
    got = client.get_run(rid)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert client.get_experiment(got.info.experiment_id).name == "seed001"
    assert got.data.params == mlflow_run.config_params(cfg.to_dict())
    assert got.data.params["lr"] == "0.001" and json.loads(got.data.params["group_lrs"]) == {"0": 0.002}
    assert "mlflow" not in got.data.params
    assert_each_step_once(client, rid, run)
    assert {"train/skipped_steps", "lr/default", "lr/0", "grad_norm/0", "val/auc", "epoch/train_loss"} <= set(
        got.data.metrics
    )
    tags = got.data.tags
    assert (
        tags["finding.input-out-of-range"].startswith("open: ")
        and "Fix: " in tags["finding.input-out-of-range"]
    )
    for f in run.findings:
        assert tags[f"finding.{f.code}"] == f"{f.status}: {f.message} Fix: {f.fix}"
    assert tags["nbtools.findings_open"] == ", ".join(f.code for f in run.findings if f.is_open)
    assert tags["nbtools.stop"] == "finished"
    assert tags["nbtools.run_dir"] == str(tmp_path / "run") and tags["nbtools.best_epoch"] == str(
        run.best_epoch
    )
    names = {a.path for a in client.list_artifacts(rid)}
    assert {"best.pt", "metrics.json", "config.json", "loss_curve.png", "learning_curves.png"} <= names
    best = client.download_artifacts(rid, "best.pt", str(tmp_path))
    assert Path(best).read_bytes() == (tmp_path / "run" / "best.pt").read_bytes()
    # beside the database (in Colab: on Drive with it), not in the working directory (the runtime's disk)
    assert (tmp_path / "mlartifacts" / "seed001").is_dir() and not list((tmp_path / "cwd").iterdir())


def test_a_run_resumed_twice_after_disconnects_is_one_mlflow_run_with_each_step_once(tmp_path, store):
    """Killed mid-epoch twice (after mid-epoch checkpoints MLflow has not seen), resumed each time: one
    MLflow run, its id kept in the run folder, and the step sequence is the final run's."""
    folder, cfg = tmp_path / "run", CFG.replace(epochs=4, checkpoint_every_steps=2, mlflow=store)
    with pytest.raises(StopAfter.Disconnect):
        _fit(folder, cfg, batch_transform=StopAfter(PER_EPOCH + 5))  # in epoch 2, after step 8's checkpoint
    rid, client = run_id(folder), MlflowClient(store)
    assert client.get_run(rid).info.status == "FAILED"
    # sent at epoch ends only: nothing the resume trains again (steps 9-10) is in MLflow
    assert [s for s, _ in history(client, rid, "train/loss")] == [2, 4, 6]
    with pytest.raises(StopAfter.Disconnect):
        _fit(folder, cfg, resume="latest", batch_transform=StopAfter(2 * PER_EPOCH + 1))  # epoch 3 + 2 steps
    assert run_id(folder) == rid and client.get_run(rid).info.status == "FAILED"
    run = _fit(folder, cfg, resume="latest")
    assert len(run.resumes) == 2 and run_id(folder) == rid
    assert client.get_run(rid).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(rid).info.experiment_id])) == 1
    assert_each_step_once(client, rid, run)
    assert len(client.get_run(rid).data.params) == len(mlflow_run.config_params(cfg.to_dict()))


def test_a_resume_from_an_earlier_epoch_keeps_the_first_values_and_says_so(tmp_path, store, caplog):
    folder, cfg = tmp_path / "run", CFG.replace(epochs=3, mlflow=store)
    first = _fit(folder, cfg)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _fit(folder, cfg.replace(lr=5e-4), resume=1)
    client, rid = MlflowClient(store), run_id(folder)
    said = [r.getMessage() for r in caplog.records if "cannot replace a logged value" in r.getMessage()]
    assert len(said) == 1 and f"trains steps {PER_EPOCH + 1}-{3 * PER_EPOCH} again" in said[0]
    assert (
        client.get_run(rid)
        .data.tags["nbtools.retrained"]
        .startswith(f"steps {PER_EPOCH + 1}-{3 * PER_EPOCH}")
    )
    assert_each_step_once(client, rid, first)  # no step twice: MLflow keeps what it was sent first


def test_mlflow_configured_but_not_installed_trains_and_says_how_to_install(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    mlflow_run.mlflow_api.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            run = _fit(tmp_path / "run", CFG.replace(mlflow=f"sqlite:///{tmp_path}/m.db"))
    finally:
        mlflow_run.mlflow_api.cache_clear()
    assert len(run.history) == 2 and not (tmp_path / "run" / "mlflow.json").exists()
    said = [r.getMessage() for r in caplog.records if "mlflow" in r.getMessage().lower()]
    assert len(said) == 1 and 'pip install "nbtools[mlflow]"' in said[0], said


def test_a_tracking_uri_that_fails_trains_and_says_so_once_and_what_was_not_logged(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")  # a store below a file: root cannot write there either
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run = _fit(tmp_path / "run", CFG.replace(mlflow=f"sqlite:///{tmp_path}/file/mlflow.db"))
    assert len(run.history) == 2 and (tmp_path / "run" / "best.pt").exists()
    assert not (tmp_path / "run" / "mlflow.json").exists()
    said = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(said) == 2, said
    assert "failed" in said[0] and "Training goes on" in said[0]
    assert f"steps 2-{2 * PER_EPOCH}, epochs 1-2" in said[1] and "artifacts best.pt" in said[1]


class BreakStore:
    """A batch_transform that, at batch `n`, copies the SQLite store aside and writes junk over it."""

    def __init__(self, db, n):
        self.db, self.n = db, n

    def __call__(self, x, y):
        self.n -= 1
        if self.n == 0:
            shutil.copy(self.db, self.db.with_suffix(".good"))
            with open(self.db, "r+b") as f:
                f.write(b"not a database" * 10)
        return x, y


def test_a_store_failing_mid_run_costs_no_step_once_a_resume_finds_it_again(tmp_path, store, caplog):
    """MLflow fails in epoch 2: training goes on, the end names what was not logged; with the store back,
    a resume logs what its checkpoint holds and MLflow lacks: the curves have no gap."""
    folder, db, cfg = tmp_path / "run", tmp_path / "mlflow.db", CFG.replace(epochs=3, mlflow=store)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run = _fit(folder, cfg, batch_transform=BreakStore(db, PER_EPOCH + 2))
    assert len(run.history) == 3
    said = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(said) == 2 and "failed" in said[0], said
    assert f"steps {PER_EPOCH + 2}-{3 * PER_EPOCH}, epochs 2-3" in said[1]
    assert json.loads((folder / "mlflow.json").read_text())["epoch"] == 1
    shutil.copy(db.with_suffix(".good"), db)  # the store is back
    run = _fit(folder, cfg.replace(epochs=4), resume="latest")
    assert_each_step_once(MlflowClient(store), run_id(folder), run)


@pytest.mark.slow  # a fresh interpreter importing torch
def test_import_nbtools_does_not_import_mlflow():
    code = "import sys, nbtools; nbtools.TrainConfig(mlflow='sqlite:///m.db'); print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_mlflow_field_round_trips_and_refuses_bad_values():
    cfg = nbt.TrainConfig(mlflow="sqlite:///runs/mlflow.db")
    assert cfg.mlflow == {"tracking_uri": "sqlite:///runs/mlflow.db", "experiment": "nbtools"}
    assert nbt.TrainConfig.from_json(cfg.to_json()) == cfg
    assert nbt.TrainConfig(mlflow={"experiment": "e"}).mlflow == {"tracking_uri": None, "experiment": "e"}
    for bad in (1, "", {"uri": "x"}, {"tracking_uri": "x", "experiment": ""}, ["x"]):
        with pytest.raises(ValueError, match=r"TrainConfig\.mlflow must be") as e:
            nbt.TrainConfig(mlflow=bad)
        assert e.value.field == "mlflow"
