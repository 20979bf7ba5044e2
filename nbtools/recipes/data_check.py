"""A resume trains on the data the run was trained on, or refuses: where the run's data is now, and
whether what is there is the same (file list, sizes, labels, classes, split) as the run recorded.

The same files under a new root (a Drive mounted at a new path, a folder moved whole) are the same
data: the move is said and kept in meta["data"]["moves"]. Anything else is refused, naming the
files, unless the caller allows it (`allow_changed_data=True`), which is kept in meta["data"]["changes"].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbtools.data import DataChange, compare_fingerprints
from nbtools.wording import Reworded


class DataChangedError(Reworded, ValueError):
    """The data a resume found is not the data the run was trained on; the message names the change."""


def locate(run_dir: str | Path, record: dict[str, Any], part: str, given: str | Path | None) -> str | None:
    """Where a run's `part` ("data" or "val") is now: `given` (a new location) when passed, else the
    path as the run recorded it, else its resolved form (the run was started from another folder)."""
    recorded = record["source"][part]
    if given is not None:
        if recorded is None:
            raise ValueError(
                f"{run_dir} was trained with a hold-out split of its data, without a {part} folder; "
                f"drop {part}= (the hold-out is rebuilt from the data)"
            )
        return str(given)
    if recorded is None:
        return None
    for path in (recorded, record["source"][f"{part}_resolved"]):
        if Path(path).exists():
            return str(path)
    raise FileNotFoundError(  # the options in Python's words; the CLI and the notebooks show theirs
        f"{run_dir} was trained on {recorded} (resolved {record['source'][part + '_resolved']}), which is "
        f"not there: mount Google Drive (or restore the folder), or pass where it is now: "
        f"load_job(run_dir, {part}=NEW_PATH); the files are checked against the run"
    )


def _changes(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, DataChange]:
    out = {}
    for part in ("train", "val"):
        old, new = recorded["fingerprint"][part], current["fingerprint"][part]
        if (old is None) != (new is None):
            raise DataChangedError(
                f"the run validated on {'a hold-out split' if old is None else 'a separate folder'}; "
                f"resume it the same way"
            )
        if old is not None:
            out[part] = compare_fingerprints(old, new)
    return out


def check_data(
    run_dir: str | Path, recorded: dict[str, Any], current: dict[str, Any], allow_changed: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Compare the data a resume rebuilt (`current`, a user_data record) with the run's (`recorded`).

    Returns the record to keep with the resumed run and the lines to print. Raises DataChangedError
    naming what changed (added, removed, relabelled, resized files; classes; the split) and how to
    proceed, unless `allow_changed`: then the change is recorded in the returned record's "changes"."""
    changes = _changes(recorded, current)
    names = {"train": current["source"]["data"], "val": current["source"]["val"]}
    changed = {part: c for part, c in changes.items() if not c.same}
    other_split = recorded["split"].get("val_sha256") != current["split"].get("val_sha256")
    if changed:
        changed_text = "; ".join(f"{names[p]}: {c}" for p, c in changed.items())
    elif other_split or recorded["classes"] != current["classes"]:
        changed_text = (
            f"the same files give another split or class order (recorded {recorded['split']}, classes "
            f"{recorded['classes']}; now {current['split']}, classes {current['classes']}): the "
            f"positive= argument or scikit-learn's version differs"
        )
    else:
        changed_text = ""
    keep = dict(current)
    keep["moves"] = list(recorded.get("moves", []))
    keep["changes"] = list(recorded.get("changes", []))
    lines = []
    if changed_text:
        if not allow_changed:
            raise DataChangedError(
                f"{run_dir} was trained on other data than what is there now: {changed_text}. A resume must "
                f"train on the same files. To proceed: restore the files; or start a new run (a new run_dir) "
                f"on the data as it is now; or, knowingly, resume on the changed data with "
                f"load_job(run_dir, allow_changed_data=True), which records the "
                f"change in the run's meta['data']['changes']"
            )
        if recorded["classes"] != current["classes"]:
            raise DataChangedError(
                f"the classes changed ({recorded['classes']} -> {current['classes']}): the model of {run_dir} "
                f"has one output per recorded class and cannot resume on these; start a new run (a new run_dir)"
            )
        keep["changes"].append(
            {"change": changed_text, "sha256": _digests(recorded), "now": _digests(current)}
        )
        lines.append(f"data changed, resuming anyway (allow_changed_data=True, recorded): {changed_text}")
    moved = [(p, c) for p, c in changes.items() if c.moved]
    for part, c in moved:
        keep["moves"].append({"part": part, "from": c.roots[0], "to": c.roots[1]})
        if part not in changed:
            n = current["fingerprint"][part]["n_files"]
            lines.append(
                f"data moved: {c.roots[0]} -> {c.roots[1]}; the same {n} files (paths, sizes, labels): "
                f"continuing on them there"
            )
    if not lines:
        lines.append(f"data: the same files as the run was trained on ({_summary(current)})")
    return keep, lines


def _digests(record: dict[str, Any]) -> dict[str, str | None]:
    return {p: fp and fp["sha256"] for p, fp in record["fingerprint"].items()}


def _summary(record: dict[str, Any]) -> str:
    fp, split = record["fingerprint"], record["split"]
    n = fp["train"]["n_files"] + (fp["val"]["n_files"] if fp["val"] else 0)
    return f"{n} files, {split['n_train']} train, {split['n_val']} val"
