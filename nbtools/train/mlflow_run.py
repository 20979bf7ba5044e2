"""The MLflow run of a run folder: created once with the config as params, its id and what it holds kept in
mlflow.json, continued by every resume. The calls to MLflow are here (nbtools.train.mlflow_log decides what
to send and when); mlflow is imported when a fit with TrainConfig.mlflow starts, never by `import nbtools`
(1.2 s on a quiet 2-core machine, 3 s on a busy one: bench/mlflow_cost.py).

HTTP calls get 2 retries and 30 s each where the user set no MLFLOW_HTTP_REQUEST_*: with MLflow's defaults
(7 retries, backoff factor 2) a tracking server that refuses connections stalls the training loop for
246 s before the call fails, with these 3.7 s (measured on this machine, MLflow 3.18).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from nbtools.atomic import write_json_atomic
from nbtools.runs.files import MLFLOW_FILE

log = logging.getLogger(__name__)

INSTALL = 'pip install "nbtools[mlflow]"'
MAX_METRICS, MAX_TAGS = 1000, 100  # what one MlflowClient.log_batch takes (params count as tags)
TAG_CHARS = 5000  # below every store's limit on a tag value
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@functools.cache
def mlflow_api():
    """(MlflowClient, Metric, Param, RunTag, get_tracking_uri), or the ImportError's message."""
    try:
        from mlflow import get_tracking_uri
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        return str(e)
    return MlflowClient, Metric, Param, RunTag, get_tracking_uri


@contextmanager
def http_limits():
    """HTTP_LIMITS for the calls inside, where the environment sets none (MLflow reads them per call)."""
    unset = [k for k in HTTP_LIMITS if k not in os.environ]
    os.environ.update({k: HTTP_LIMITS[k] for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


def config_params(config: dict) -> dict[str, str]:
    """TrainConfig.to_dict() as MLflow params: mappings as JSON, the rest as str; not the mlflow field."""
    return {
        k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)
        for k, v in sorted(config.items())
        if k != "mlflow"
    }


def artifact_root(run: MlflowRun) -> str | None:
    """Artifacts of a new experiment in a SQLite store: beside the database (mlartifacts/EXPERIMENT), not
    MLflow's default ./mlruns in the working directory, which in Colab is the runtime's disk, lost with it."""
    if not run.uri.startswith("sqlite:///"):
        return None  # a tracking server keeps them where it is configured to
    db = Path(run.uri.removeprefix("sqlite:///")).absolute()
    return (db.parent / "mlartifacts" / re.sub(r"[^\w.-]", "_", run.settings["experiment"])).as_uri()


class MlflowRun:
    """The MLflow run that `run_dir` logs to. `logged`: the last interval step and the last epoch it
    holds (-1 and 0: none); `params`: whether it holds the config."""

    def __init__(self, run_dir: Path, settings: dict, config: dict):
        self.run_dir, self.settings, self.config = run_dir, settings, config
        self.client = self.run_id = None
        self.logged = {"step": -1, "epoch": 0}
        self.params = self.opened = False

    @property
    def uri(self) -> str:
        return self.settings["tracking_uri"] or mlflow_api()[4]()

    def where(self) -> dict:
        return {"tracking_uri": self.uri, "experiment": self.settings["experiment"]}

    def load(self) -> None:
        """Continue the MLflow run that mlflow.json names, when it is in this store and experiment."""
        path = self.run_dir / MLFLOW_FILE
        try:
            saved = json.loads(path.read_text())
            run_id, logged = str(saved["run_id"]), {"step": int(saved["step"]), "epoch": int(saved["epoch"])}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning(f"{path} cannot be read ({e}): this fit logs the run to a new MLflow run")
            return
        if {k: saved.get(k) for k in ("tracking_uri", "experiment")} != self.where():
            was = f"MLflow run {run_id} in {saved.get('tracking_uri')} ({saved.get('experiment')!r})"
            log.warning(
                f"{path} names {was}; TrainConfig.mlflow names {self.where()}: a new MLflow run there"
            )
            return
        self.run_id, self.logged, self.params = run_id, logged, bool(saved.get("params"))

    def save(self) -> None:
        state = {**self.where(), "run_id": self.run_id, "params": self.params, **self.logged}
        write_json_atomic(self.run_dir / MLFLOW_FILE, state)

    def open(self) -> str:
        """The run's id: the one continued (set running again) or a new one, with the params."""
        client_class, _, param, _, _ = mlflow_api()
        if self.client is None:
            self.client = client_class(tracking_uri=self.settings["tracking_uri"])
        if self.run_id is not None and not self.opened and self._gone():
            log.warning(
                f"MLflow run {self.run_id} (named in {self.run_dir / MLFLOW_FILE}) is not in {self.uri} or was "
                "deleted: this fit logs the run to a new MLflow run"
            )
            self.run_id, self.logged, self.params = None, {"step": -1, "epoch": 0}, False
        if self.run_id is None:
            name = self.settings["experiment"]
            found = self.client.get_experiment_by_name(name)
            experiment = (
                found.experiment_id if found else self.client.create_experiment(name, artifact_root(self))
            )
            tags = {"nbtools.run_dir": str(self.run_dir)}
            self.run_id = self.client.create_run(
                experiment, run_name=self.run_dir.name, tags=tags
            ).info.run_id
            self.save()  # the id first: a resume continues this run whatever fails next
        elif not self.opened:
            self.client.update_run(self.run_id, status="RUNNING")
        self.opened = True
        if not self.params:
            params = [param(k, v) for k, v in config_params(self.config).items()]
            for i in range(0, len(params), MAX_TAGS):
                self.client.log_batch(self.run_id, params=params[i : i + MAX_TAGS])
            self.params = True
        return self.run_id

    def _gone(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(self.run_id).info.lifecycle_stage == "deleted"
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return True
            raise

    def log(self, metrics: list, tags: dict[str, str]) -> None:
        """Metrics (mlflow.entities.Metric) and tags, in batches."""
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS])
        entries = [mlflow_api()[3](k, v[:TAG_CHARS]) for k, v in tags.items()]
        for i in range(0, len(entries), MAX_TAGS):
            self.client.log_batch(self.run_id, tags=entries[i : i + MAX_TAGS])

    def finish(self, files: list[Path], status: str) -> None:
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)
