"""`RunTable`: what `compare_runs` returns, as plain text, plain HTML (no script, no widget: a saved
notebook, GitHub and a reconnected Colab tab show it) and CSV. The rows are dicts (nbtools.runs.compare
lists their fields); this module only renders them."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from nbtools.atomic import replace_atomic

# (header, how a row shows in it) for the text and HTML tables; the CSV keeps every field as it is
COLUMNS = ("run", "task", "status", "epochs", "resumes", "best", "last", "open findings", "wall time", "data")


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _value(v: Any) -> str:
    """A config value in a difference: JSON for dicts and lists (group_lrs, unfreeze), None as None (no EMA,
    no clipping; also a field or recipe argument the other run does not have), numbers short."""
    return (
        json.dumps(v, sort_keys=True)
        if isinstance(v, (dict, list, tuple))
        else repr(v)
        if v is None
        else _num(v)
    )


def wall_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def differences_text(diff: dict[str, tuple[Any, Any]] | None) -> str:
    """ "lr 0.01 -> 0.001, epochs 4 -> 8": each key with the baseline's value and this run's ("?": unknown)."""
    if diff is None:
        return "?"
    return ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, a, b in ((k, *v) for k, v in diff.items()))


def _cells(row: dict[str, Any], baseline: str | None) -> list[str]:
    epochs = (
        f"{_num(row['epochs'])}/{_num(row['planned'])}" if row["planned"] is not None else _num(row["epochs"])
    )
    resumes = _num(row["resumes"])
    if row["resumes"] is None and row["config_changes"]:
        resumes = f">={row['config_changes']}"  # an older record: the resumes that changed the config
    best = "-"
    if row["best_epoch"] is not None:
        best = f"{_num(row['best_value'])} ({row['monitor']}, epoch {row['best_epoch']})"
    data = row["data"] or "-"
    if row["files"] is not None:
        data += f", {row['files']} files"
    if row["classes"]:
        data += f" [{', '.join(row['classes'])}]"
    return [
        row["run"] + (" (baseline)" if row["run"] == baseline else ""),
        row["task"] or "-",
        row["status"],
        epochs,
        resumes,
        best,
        _num(row["last_value"]),
        ", ".join(row["open_findings"]) or "-",
        wall_time(row["seconds"]),
        data,
    ]


class RunTable:
    """Runs side by side: `.rows` (one dict per run), `.baseline` (its run name), `.source` (the folder
    read, if one). Prints as a text table, shows as an HTML table in a notebook, `.to_csv(path)`."""

    def __init__(
        self, rows: list[dict[str, Any]], baseline: str | None, source: str | None, fields: tuple[str, ...]
    ):
        self.rows, self.baseline, self.source, self.fields = rows, baseline, source, fields

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name_or_index: str | int) -> dict[str, Any]:
        """A row by its position or its run name."""
        if isinstance(name_or_index, int):
            return self.rows[name_or_index]
        for row in self.rows:
            if row["run"] == name_or_index:
                return row
        raise KeyError(f"no run named {name_or_index!r}; the runs: {', '.join(r['run'] for r in self.rows)}")

    def _empty(self) -> str:
        where = f" in {self.source}" if self.source else ""
        return f"no run folders{where} (a run folder holds metrics.json, config.json, checkpoints or nbtools.lock)"

    def _notes(self, config: bool = True) -> list[tuple[str, str]]:
        """(run, text) for the rows with something to add: why a run stopped, and (`config`) what
        differs from the baseline."""
        notes = []
        for row in self.rows:
            if row["note"]:
                notes.append((row["run"], row["note"]))
            if config and row["config_diff"]:
                notes.append(
                    (row["run"], f"config vs {self.baseline}: {differences_text(row['config_diff'])}")
                )
        return notes

    def __str__(self) -> str:
        if not self.rows:
            return self._empty()
        table = [list(COLUMNS), *(_cells(r, self.baseline) for r in self.rows)]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
        notes = self._notes()
        if notes:
            lines += ["", *(f"{run}: {text}" for run, text in notes)]
        same = [r["run"] for r in self.rows if r["run"] != self.baseline and r["config_diff"] == {}]
        if self.baseline and same:
            lines.append(f"same config as {self.baseline}: {', '.join(same)}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self._empty())}</p>"
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in (*COLUMNS, f"config vs {self.baseline}"))
        body = []
        for row in self.rows:
            cells = [*_cells(row, self.baseline), differences_text(row["config_diff"]) or "-"]
            if row["run"] == self.baseline:
                cells[-1] = "(baseline)"
            tds = "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in cells)
            title = f" title='{esc(row['note'], quote=True)}'" if row["note"] else ""
            body.append(f"<tr{title}>{tds}</tr>")
        notes = "".join(f"<li><b>{esc(run)}</b>: {esc(text)}</li>" for run, text in self._notes(config=False))
        return f"<table><tr>{head}</tr>{''.join(body)}</table>" + (f"<ul>{notes}</ul>" if notes else "")

    def to_csv(self, path: str | Path) -> Path:
        """Every field of every row as CSV, written atomically (a crash leaves the old file or the new
        one); lists are joined with ";", the config differences read "key old -> new". Returns the path."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(self.fields), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(k, v) for k, v in row.items()})
        return replace_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def _csv_value(key: str, v: Any) -> Any:
    if key == "config_diff":
        return "" if v is None else differences_text(v)
    if isinstance(v, list):
        return ";".join(map(str, v))
    if isinstance(v, float):
        return format(v, ".8g")
    return "" if v is None else v
