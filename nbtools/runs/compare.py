"""`compare_runs`: runs side by side, read straight from their folders (no server, no account).

Each run folder gives one row: from metrics.json (history, best epoch, stop, findings, sessions, meta),
config.json (the latest session's config, also before the first epoch ends), the checkpoint file names
and the lock file (nbtools.runs.lock: a live holder means the run is training now). Status:

    running      a live process holds the folder's lock
    finished     every planned epoch done
    stopped      the run recorded a stop: "stopped (early-stop)", "stopped (nonfinite)", "stopped (amp)"
    interrupted  the stop button (recorded), or a lock its holder left behind: the process was killed
                 or the Colab runtime disconnected mid-run
    failed       fewer epochs than planned, no stop recorded and no lock left: fit raised an error
    unreadable   metrics.json is not valid JSON, or not a run record this version can read

A folder that cannot be read is a row that says why, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbtools.runs.classes import class_names
from nbtools.runs.files import CHECKPOINT_NAME, CONFIG_FILE, LOCK_FILE, METRICS_FILE, run_files, run_path
from nbtools.runs.lock import LockState, read_lock
from nbtools.runs.run import Run
from nbtools.runs.table import RunTable

# what a row holds, in the order of the CSV's columns (see nbtools.runs.table for the rendering)
FIELDS = (
    "run",
    "path",
    "task",
    "status",
    "note",
    "epochs",
    "planned",
    "resumes",
    "config_changes",
    "monitor",
    "best_epoch",
    "best_value",
    "last_value",
    "open_findings",
    "seconds",
    "started",
    "data",
    "files",
    "classes",
    "checkpoints",
    "config_diff",
)


def is_run_folder(folder: Path) -> bool:
    """A folder holds a run when it has a run's files (nbtools.runs.files) or its lock."""
    return folder.is_dir() and (bool(run_files(folder)) or (folder / LOCK_FILE).exists())


def find_runs(runs: str | Path | Iterable[str | Path | Run]) -> tuple[list[Path], bool]:
    """The run folders of `runs` and whether they came from one folder (then ordered by start time).
    A folder that is itself a run is that one run."""
    if isinstance(runs, (str, Path)):
        root = run_path(runs)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} is not a folder: compare_runs takes a folder of run folders (e.g. nbt.runs_root('auto')) "
                f"or a list of run folders"
            )
        if is_run_folder(root):
            return [root], False
        return sorted(p for p in root.iterdir() if is_run_folder(p)), True
    if isinstance(runs, Run):
        return [run_path(runs.run_dir)], False
    return [run_path(r.run_dir if isinstance(r, Run) else r) for r in runs], False


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(the parsed file, None), or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: json's JSONDecodeError
        return None, f"{path.name} cannot be read ({type(e).__name__}: {e})"


def _checkpoint_epochs(run_dir: Path) -> list[int]:
    """The completed epochs the checkpoint files' names say (without opening them)."""
    names = (CHECKPOINT_NAME.match(p.name) for p in run_dir.glob("epoch_*.pt"))
    return sorted(int(m.group(1)) - (m.group(2) is not None) for m in names if m)


def _started(run: Run | None, run_dir: Path) -> str | None:
    """When the run began: its first session's record, else (older runs) the oldest of its files."""
    if run is not None and run.sessions:
        return run.sessions[0].get("started")
    times = [p.stat().st_mtime for p in run_files(run_dir)]
    if not times:
        return None
    return datetime.fromtimestamp(min(times), timezone.utc).isoformat(timespec="milliseconds")


def _task(config: dict, run: Run) -> str:
    """The run's task as recorded (config or meta), classification when it records none."""
    for value in (config.get("task"), run.meta.get("task"), run.task.get("task")):
        if isinstance(value, str) and value != "auto":
            return value
    return "classification"


def _data(meta: dict) -> tuple[str, int | None]:
    """(name, number of files) of the run's data: the user's folder or CSV, or the recipe's demo set."""
    data = meta.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), dict):
        fingerprint = data.get("fingerprint") or {}
        counts = [(fingerprint.get(k) or {}).get("n_files") for k in ("train", "val")]
        given = [n for n in counts if isinstance(n, int)]
        return Path(str(data["source"].get("data"))).name, sum(given) if given else None
    recipe = meta.get("recipe")
    return (f"demo ({recipe})" if recipe else ""), None


def _status(run: Run | None, lock: LockState | None, planned: int | None, unreadable: str | None):
    """(status, note) by the rules in the module docstring."""
    if lock is not None and lock.live:
        h = lock.holder
        return "running", f"pid {h.get('pid')} on host {h.get('host')!r} since {h.get('started')}"
    if unreadable is not None:
        return "unreadable", unreadable
    if run is not None and run.stop is not None:
        status = "interrupted" if run.stop.code == "interrupted" else f"stopped ({run.stop.code})"
        return status, run.stop.message
    done = run.epoch if run is not None else 0
    if run is not None and planned is not None and done >= planned:
        return "finished", ""
    if lock is not None:
        return "interrupted", (
            f"its process ended without closing the run after epoch {done} (killed, or the runtime "
            f"disconnected): {lock.stale}; resume it from its newest checkpoint"
        )
    return "failed", (
        f"ended after epoch {done} of {planned} with no stop recorded: fit raised an error (the notebook "
        f"or the log shows it); resume it from its newest checkpoint"
    )


def _config_view(config: dict, meta: dict) -> dict[str, Any]:
    """What the differences are taken over: the config's fields, the recipe and its own arguments."""
    view = dict(config)
    if meta.get("recipe"):
        view["recipe"] = meta["recipe"]
        for k, v in (meta.get("args") or {}).items():
            if k not in config:  # the config fields a recipe passes on are in the config already
                view[f"recipe.{k}"] = v
    return view


def read_row(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run folder's row (FIELDS, config_diff still empty) and the view its differences are taken over."""
    run_dir = run_path(run_dir)
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(run=run_dir.name, path=str(run_dir), open_findings=[], config_diff={})
    if not run_dir.is_dir():
        row.update(status="unreadable", note=f"{run_dir} does not exist")
        return row, {}
    record, unreadable = _read_json(run_dir / METRICS_FILE)
    lock = read_lock(run_dir)
    if record is not None:
        try:
            run = Run.from_dict(run_dir, record)
            filled = _from_record(dict(row), run, record["config"])
            filled["status"], filled["note"] = _status(run, lock, filled["planned"], None)
            return filled, _config_view(record["config"], run.meta)
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # a record of another shape
            unreadable = (
                f"{METRICS_FILE} is not a run record this nbtools version reads (written by another "
                f"version?): {type(e).__name__}: {e}"
            )
    # no record to read: what the config, the checkpoint names and the lock still tell
    config, _ = _read_json(run_dir / CONFIG_FILE)  # the latest session's, written when fit starts
    config = config if isinstance(config, dict) else {}
    epochs = _checkpoint_epochs(run_dir)
    row.update(planned=config.get("epochs"), monitor=config.get("monitor"), checkpoints=len(epochs))
    row.update(epochs=max(epochs, default=0), started=_started(None, run_dir))
    missing = unreadable == f"no {METRICS_FILE}"  # no epoch finished yet
    row["status"], row["note"] = _status(None, lock, row["planned"], None if missing else unreadable)
    if missing and row["status"] != "running":
        row["note"] = f"no epoch finished (no {METRICS_FILE}, {len(epochs)} checkpoint files); " + row["note"]
    elif not missing and epochs:
        row["note"] += (
            f"; its checkpoints hold the history up to epoch {max(epochs)}: a resume from the newest writes "
            f"{METRICS_FILE} again"
        )
    return row, _config_view(config, {})


def _from_record(row: dict[str, Any], run: Run, config: dict) -> dict[str, Any]:
    """`row` filled from a run record (raises on a record of another shape)."""
    monitor = config.get("monitor")
    best = run.best() or {}
    row.update(planned=config.get("epochs"), monitor=monitor, epochs=run.epoch, task=_task(config, run))
    # older records kept no sessions: None (unknown); their config_changes count the resumes that changed it
    row["resumes"] = len(run.resumes) if run.sessions else None
    row["config_changes"] = len(run.config_changes)
    row["best_epoch"] = run.best_epoch
    row["best_value"] = best.get(monitor)
    row["last_value"] = run.history[-1].get(monitor) if run.history else None
    row["open_findings"] = [f.code for f in run.findings if f.is_open]
    row["seconds"] = float(sum(h.get("seconds") or 0.0 for h in run.history))
    row["started"] = _started(run, run.run_dir)
    row["checkpoints"] = len(_checkpoint_epochs(run.run_dir))
    row["data"], row["files"] = _data(run.meta)
    row["classes"] = class_names(run.meta)
    return row


def _differences(view: dict[str, Any], base: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (baseline value, this run's value)} for every key whose values differ (missing: None)."""
    return {
        k: (base.get(k), view.get(k)) for k in sorted(set(view) | set(base)) if view.get(k) != base.get(k)
    }


def compare_runs(runs: str | Path | Iterable[str | Path | Run], baseline: str | None = None) -> RunTable:
    """A table of runs from their folders: status, epochs, resumes, best and last monitored value, open
    findings, wall time, data, and the config differences against a baseline run.

    runs: a folder of run folders (e.g. nbt.runs_root("auto")), one run folder, or a list of run folders
    (or Runs). baseline: the run (folder name or path) the others are compared with; default the oldest.
    The table shows as HTML in a notebook, prints as text, writes `.to_csv(path)`; `.rows` are dicts.

    >>> nbt.compare_runs("runs", baseline="resnet3d")   # doctest: +SKIP
    """
    folders, from_one = find_runs(runs)
    read = [read_row(f) for f in folders]
    if from_one:  # oldest first; a run with no start time at the end
        read.sort(key=lambda rv: (rv[0]["started"] is None, rv[0]["started"] or "", rv[0]["run"]))
    rows = [r for r, _ in read]
    base = _baseline(rows, baseline)
    if base is not None:
        base_view = read[base][1]
        for i, (row, view) in enumerate(read):
            # None: unknown (an unreadable folder without config.json has nothing to compare)
            known = bool(view and base_view)
            row["config_diff"] = {} if i == base else _differences(view, base_view) if known else None
    source = str(run_path(runs)) if isinstance(runs, (str, Path)) else None
    return RunTable(rows, rows[base]["run"] if base is not None else None, source, FIELDS)


def _baseline(rows: list[dict[str, Any]], name: str | None) -> int | None:
    """The index of the baseline row: the one named, else the oldest that was read."""
    if not rows:
        return None
    if name is not None:
        for i, r in enumerate(rows):
            if name in (r["run"], r["path"]) or run_path(name) == Path(r["path"]):
                return i
        raise ValueError(
            f"baseline={name!r} is not one of the runs compared ({', '.join(r['run'] for r in rows)}); "
            f"name one by its folder name (baseline= in Python, --baseline on the command line), or leave it "
            f"out for the oldest"
        )
    dated = [i for i, r in enumerate(rows) if r["started"] is not None and r["status"] != "unreadable"]
    return min(dated, key=lambda i: rows[i]["started"]) if dated else 0
