"""MLflow tracking of a run, optional: `TrainConfig(mlflow=URI)` and `pip install "nbtools[mlflow]"`.

Logged: the config as params, once, when the MLflow run is created; each telemetry and epoch record's
scalars at its global optimizer step, under the names TensorBoard shows (train/loss, val/auc ...);
findings as tags (finding.<code>, nbtools.findings_open, nbtools.stop); and when fit ends, the run
folder's figures, best.pt (best_ema.pt), metrics.json and config.json as artifacts. The MLflow run id
lives in the run folder (mlflow.json): a resumed fit continues that MLflow run wherever it runs (04, the
CLI's --resume latest, another Colab runtime); a new fit starts a new one.

Each step once. MLflow keeps every value logged at a step and cannot remove one (TensorBoard's sink
instead purges its events from the resume point and writes the restored records again, so a re-trained
step replaces the old). So mlflow.json records the last interval step and the last epoch logged, a record
at or before them is never logged again, and records are sent only at epoch ends, once the epoch
checkpoint is on disk (and when fit returns): MLflow holds what a checkpoint holds. A session that ends
mid-epoch (a Colab disconnect, the stop button, a crash) has logged nothing its resume trains again; the
resume logs the restored records MLflow lacks (from its checkpoint), then its own: no step twice, and no
gap. The one exception: a resume that trains logged steps again (from an earlier epoch than the newest,
or after a stop on non-finite steps, whose last steps no checkpoint holds) leaves the values first logged
there, and fit says so (a warning, the tag nbtools.retrained); TensorBoard and metrics.json show the new.

Never in training's way: not installed, fit says how to install it and trains. The first failing call
(a tracking server down, a full disk) is said once and ends MLflow logging for the rest of that fit,
which says at its end what was not logged; the next resume logs what its checkpoint holds and MLflow
lacks. The calls themselves, and mlflow.json, are nbtools.train.mlflow_run's. Only rank 0 logs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
from pathlib import Path

from nbtools.runs.files import BEST_EMA_FILE, BEST_FILE, CONFIG_FILE, METRICS_FILE
from nbtools.runs.stop import RAISING_CODES
from nbtools.train.mlflow_run import INSTALL, MAX_METRICS, MlflowRun, http_limits, mlflow_api
from nbtools.train.tensorboard import epoch_scalars, step_scalars

log = logging.getLogger(__name__)

_NOT_IN_KEYS = re.compile(r"[^\w\-. :/]")  # MLflow's metric and tag keys take these characters only


def _metrics(step: int, timestamp: int, scalars: dict) -> list:
    """The finite scalars of a record as mlflow.entities.Metric at its step (as TensorBoard writes them)."""
    metric = mlflow_api()[1]
    return [
        metric(_NOT_IN_KEYS.sub("_", k), float(v), timestamp, step)
        for k, v in scalars.items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    ]


class MlflowLog:
    """What fit logs to MLflow; every method is a no-op when TrainConfig.mlflow is None, when mlflow is
    not installed, and after the first failure. `interval`, `epoch`, `restored`, `finding` and
    `close(error)` take what fit's progress is told; `end(run)` runs once fit has written its last files."""

    def __init__(self, run_dir: str | Path, cfg, enabled: bool = True):
        self.enabled = bool(enabled and cfg.mlflow) and self._importable()  # said before any bar
        self.run = MlflowRun(Path(run_dir), cfg.mlflow, cfg.to_dict())
        self.pending: list[tuple[str, int, tuple]] = []  # (kind, step or epoch, (step, time, scalars))
        self.tags: dict[str, str] = {}
        self.failed: str | None = None
        self.lost: list[tuple[str, int]] = []  # records not sent after a failure
        self.lost_tags = 0

    @staticmethod
    def _importable() -> bool:
        found = mlflow_api()
        if isinstance(found, str):
            log.warning(
                f"TrainConfig.mlflow is set, but mlflow does not import here ({found}): {INSTALL} to log "
                "this run to MLflow; training goes on without it"
            )
        return not isinstance(found, str)

    # --- records ---------------------------------------------------------------------------
    def _add(self, kind: str, key: int, step: int, scalars: dict) -> None:
        if not self.enabled or key <= self.run.logged[kind]:
            return
        if self.failed:
            self.lost.append((kind, key))
            return
        self.pending.append((kind, key, (step, int(time.time() * 1000), scalars)))  # Metrics made when sent

    def interval(self, record: dict) -> None:
        self._add("step", record["step"], record["step"], step_scalars(record))

    def epoch(self, record: dict) -> None:
        """Sent with the intervals before it: fit tells the epoch after its checkpoint is written."""
        self._add("epoch", record["epoch"], record["step"], epoch_scalars(record))
        self._send()

    def finding(self, f) -> None:
        if self.enabled:
            self.tags[f"finding.{f.code}"] = f"{f.status}: {f.message} Fix: {f.fix}"

    def restored(self, run) -> None:
        """A resumed fit: continue the MLflow run of mlflow.json, log the restored records it lacks."""
        if not self.enabled:
            return
        self.run.load()
        self._send(opening=True)  # before the records: a run the store lost is replaced, all of them sent
        at, last = run.sessions[-1]["step"], self.run.logged["step"]
        if at < last and not self.failed:
            self.tags["nbtools.retrained"] = f"steps {at + 1}-{last} (session {len(run.sessions)})"
            log.warning(
                f"MLflow run {self.run.run_id} holds steps up to {last}, and this fit trains steps {at + 1}-"
                f"{last} again: MLflow cannot replace a logged value, so it keeps the first ones and logs "
                f"from step {last + 1} on (TensorBoard and metrics.json show the new ones)"
            )
        for r in run.steps:
            self.interval(r)
        for h in run.history:
            self._add("epoch", h["epoch"], h["step"], epoch_scalars(h))
        if run.config_changes:
            self.tags["nbtools.config_changes"] = str(run.config_changes)
        self._send()

    # --- sending ---------------------------------------------------------------------------
    def _send(self, opening: bool = False) -> None:
        """The pending records (in batches of whole records) and tags; mlflow.json says what was sent."""
        if not self.enabled or self.failed or not (self.pending or self.tags or opening):
            return
        before = dict(self.run.logged)
        try:
            with http_limits():
                self.run.open()
                metrics = [_metrics(*made) for _, _, made in self.pending]
                while self.pending:
                    n, size = 1, len(metrics[0])
                    while n < len(self.pending) and size + len(metrics[n]) <= MAX_METRICS:
                        size, n = size + len(metrics[n]), n + 1
                    self.run.log([m for values in metrics[:n] for m in values], {})
                    del metrics[:n]
                    for kind, key, _ in self.pending[:n]:
                        self.run.logged[kind] = max(self.run.logged[kind], key)
                    del self.pending[:n]
                self.run.log([], self.tags)
                self.tags = {}
                self.run.save()
        except Exception as e:  # whatever MLflow or the disk raises, training goes on
            self._fail(e, before)

    def _fail(self, e: Exception, before: dict) -> None:
        text = str(e).strip()
        self.failed = f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"
        self.lost += [(kind, key) for kind, key, _ in self.pending]
        self.lost_tags += len(self.tags)
        self.pending, self.tags = [], {}
        if self.run.run_id is not None and self.run.logged != before:
            # what was sent before the failure, so that a resume does not send it again (if the run
            # folder's disk failed too, a resume sends those records again)
            with contextlib.suppress(OSError):
                self.run.save()
        log.warning(
            f"MLflow ({self.run.uri}) failed: {self.failed}. Training goes on; MLflow logging stops for the "
            "rest of this fit, which says at its end what was not logged"
        )

    def _say_lost(self, extra: str = "") -> None:
        parts = []
        for kind in ("step", "epoch"):
            keys = sorted(k for what, k in self.lost if what == kind)
            if keys:
                parts.append(f"{kind} {keys[0]}" if len(keys) == 1 else f"{kind}s {keys[0]}-{keys[-1]}")
        parts += [f"{self.lost_tags} tags"] if self.lost_tags else []
        parts += [extra] if extra else []
        log.warning(
            f"MLflow run {self.run.run_id or '(none created)'} did not get this fit's "
            f"{', '.join(parts) or 'last records'} ({self.failed}); a resume logs what its checkpoint holds"
        )

    def close(self, error: BaseException | None = None) -> None:
        """Send what is pending. `error`: the exception fit is leaving with (the stop button's
        KeyboardInterrupt, a crash); the records since the last epoch end are then dropped, as no
        checkpoint need hold them: a resume sends those its checkpoint holds and trains the rest again."""
        if not self.enabled:
            return
        if error is not None:
            self.pending = []
        self._send()
        if error is not None and self.run.run_id is not None and not self.failed:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            try:
                with http_limits():
                    self.run.client.set_terminated(self.run.run_id, status)
            except Exception as e:  # training is over; the status is all that is lost
                self._fail(e, dict(self.run.logged))
        if error is not None and self.failed:
            self._say_lost()

    def end(self, run) -> None:
        """After fit wrote its last files: findings and stop as tags, the files as artifacts, the status."""
        if not self.enabled:
            return
        for f in run.findings:
            self.finding(f)
        self.tags["nbtools.findings_open"] = ", ".join(f.code for f in run.findings if f.is_open) or "none"
        self.tags["nbtools.stop"] = f"{run.stop.code}: {run.stop.message}" if run.stop else "finished"
        self.tags["nbtools.best_epoch"] = str(run.best_epoch)
        self._send()
        folder = self.run.run_dir
        files = [
            folder / n
            for n in (BEST_FILE, BEST_EMA_FILE, METRICS_FILE, CONFIG_FILE)
            if (folder / n).is_file()
        ]
        files += sorted(folder.glob("*.png"))
        if not self.failed:
            status = "FAILED" if run.stop is not None and run.stop.code in RAISING_CODES else "FINISHED"
            try:
                with http_limits():
                    self.run.finish(files, status)
                return
            except Exception as e:  # an upload that fails loses the artifacts, never the run
                self._fail(e, dict(self.run.logged))
        self._say_lost(("artifacts " + ", ".join(p.name for p in files)) if files else "")


class WithMlflow:
    """fit's progress (text or dashboard) that also hands each record and finding to MLflow."""

    def __init__(self, progress, tracker: MlflowLog):
        self.progress, self.tracker = progress, tracker

    def interval(self, record: dict) -> None:
        self.tracker.interval(record)
        self.progress.interval(record)

    def end_epoch(self, record: dict) -> None:
        self.progress.end_epoch(record)  # shown first: the MLflow call may take a network round trip
        self.tracker.epoch(record)

    def resumed(self, run) -> None:
        self.tracker.restored(run)
        self.progress.resumed(run)

    def finding(self, finding) -> None:
        self.tracker.finding(finding)
        self.progress.finding(finding)

    def close(self) -> None:
        error = sys.exc_info()[1]  # fit closes in its `finally`: the exception it is leaving with, if any
        try:
            self.tracker.close(error)
        finally:
            self.progress.close()

    def batches_done(self, n: int) -> None:  # at every step: not through __getattr__'s miss
        self.progress.batches_done(n)

    def __getattr__(self, name):  # start_epoch, message, ...
        return getattr(self.progress, name)
