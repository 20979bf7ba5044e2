"""The result of `fit`, and the run folder's metrics.json that holds it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from nbtools.atomic import write_json_atomic
from nbtools.config import TrainConfig
from nbtools.env import run_folder_hint
from nbtools.runs.files import METRICS_FILE, run_path
from nbtools.runs.findings import Finding
from nbtools.runs.stop import Stop
from nbtools.runs.upgrade import VERSION, upgrade_record
from nbtools.wording import Reworded

log = logging.getLogger(__name__)


class RunExistsError(Reworded, FileExistsError):
    """`fit(resume=None)` found checkpoints in run_dir and will not train over them."""


class NonFiniteError(Reworded, RuntimeError):
    """Training stopped on non-finite losses or gradients; `.run` holds what was saved."""

    def __init__(self, message: str, run: Run):
        super().__init__(message)
        self.run = run


@dataclass
class Run:
    """A training run: its folder, history and findings (and, from `fit`, the trained models).

    history: one dict per epoch (train_loss, val_loss, val_acc, val_precision, val_recall, val_f1,
    val_auc, ema_val_* with EMA, lr, skipped, seconds, ...). steps: one telemetry record per log
    interval (see nbtools.train.telemetry).
    """

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    best_epoch: int | None = None
    best_ema_epoch: int | None = None
    stop: Stop | None = None  # why training ended before cfg.epochs (None when it ran them all)
    # one entry per resume that changed the config
    config_changes: list[dict[str, Any]] = field(default_factory=list)
    # one entry per `fit` call: {"started": UTC ISO time, "epoch", "step" (where it began: 0, 0 for the
    # first), "checkpoint": the file it resumed from, None for the first}; older records have none
    sessions: list[dict[str, Any]] = field(default_factory=list)
    # plain-JSON facts about the run, e.g. the recipe that built its model and data
    meta: dict[str, Any] = field(default_factory=dict)
    # what fit saw of the task when it started (outputs, positive rate, chance-level loss), for the
    # rules; see nbtools.diagnose.chance
    task: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def stopped(self) -> str:
        """The stop's message, "" when the run was not stopped (branch on `stop.code`, not on this)."""
        return self.stop.message if self.stop is not None else ""

    @property
    def epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def resumes(self) -> list[dict[str, Any]]:
        """The sessions that resumed the run (all but the first)."""
        return self.sessions[1:]

    def start_session(self, epoch: int = 0, step: int = 0, checkpoint: str | None = None) -> None:
        """Record that a `fit` call starts here (after `epoch` completed epochs and `step` steps)."""
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.sessions.append({"started": started, "epoch": epoch, "step": step, "checkpoint": checkpoint})

    def best(self) -> dict[str, Any] | None:
        return next((h for h in self.history if h["epoch"] == self.best_epoch), None)

    def add_finding(self, finding: Finding) -> bool:
        """Record a finding; a later finding with the same code replaces the earlier one's evidence
        and status. Returns True when the code is new or its status changed (open -> resolved, or
        back), so the caller shows it then, not at every interval."""
        for i, f in enumerate(self.findings):
            if f.code == finding.code:
                self.findings[i] = finding
                return f.status != finding.status
        self.findings.append(finding)
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "config": self.config.to_dict(),
            "best_epoch": self.best_epoch,
            "best_ema_epoch": self.best_ema_epoch,
            "stop": self.stop.to_dict() if self.stop is not None else None,
            "history": self.history,
            "steps": self.steps,
            "findings": [f.to_dict() for f in self.findings],
            "config_changes": self.config_changes,
            "sessions": self.sessions,
            "meta": self.meta,
            "task": self.task,
        }

    def save(self) -> None:
        write_json_atomic(self.run_dir / METRICS_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, run_dir: str | Path, d: dict[str, Any], config: TrainConfig | None = None) -> Run:
        """A run from its record (metrics.json, a checkpoint's "run"), of any version this nbtools reads."""
        d = upgrade_record(d)
        return cls(
            run_dir=Path(run_dir),
            config=config or TrainConfig.from_dict(d["config"]),
            history=list(d["history"]),
            steps=list(d["steps"]),
            findings=[Finding.from_dict(f) for f in d["findings"]],
            best_epoch=d["best_epoch"],
            best_ema_epoch=d["best_ema_epoch"],
            stop=Stop.from_dict(d["stop"]),
            config_changes=list(d["config_changes"]),
            sessions=list(d["sessions"]),
            meta=dict(d["meta"]),
            task=dict(d["task"]),
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        """Read a run folder's metrics.json (no model; load best.pt for that)."""
        run_dir = run_path(run_dir)
        path = run_dir / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {run_dir} is not an nbtools run folder (or no "
                f"epoch finished); {run_folder_hint()}"
            )
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path} is not valid JSON ({e}); the epoch checkpoints still hold the history"
            ) from e
        return cls.from_dict(run_dir, d)

    def __str__(self) -> str:
        last = self.history[-1] if self.history else {}
        parts = [f"run {self.run_dir}: {self.epoch}/{self.config.epochs} epochs"]
        if self.best_epoch:
            best, monitor = self.best() or {}, self.config.monitor
            # the val loss too: it breaks ties of a saturated metric (nbtools.train.early_stop)
            tie = (
                f", val_loss {best['val_loss']:.4g}"
                if monitor != "val_loss" and best.get("val_loss") is not None
                else ""
            )
            parts.append(f"best epoch {self.best_epoch} ({monitor} {best.get(monitor)}{tie})")
        for k in ("val_loss", "val_auc", "val_f1", "val_acc"):
            if last.get(k) is not None:
                parts.append(f"{k} {last[k]:.4f}")
        if self.stop is not None:
            parts.append(f"stopped: {self.stop}")
        return "; ".join(parts)
