"""Real-valued targets from a CSV: `path,target`, several target columns (`target_0, target_1, ...`) or
named ones (`path,age,volume_ml`), one float per cell. Every cell is read before anything trains, and a
cell that is empty, not a number, NaN or infinite is named by its row, column and file, with all the
others, so no run starts on a target it cannot learn.

The paths are read by the folder datasets' own CSV rules (`sources.list_files` with labels="ignore":
relative to the CSV's folder, each file must exist and be of the dataset's kind); this module reads
the numbers beside them, in the same row order.
"""

from __future__ import annotations

import csv as csv_module
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHOW = 10  # bad cells named in one message


@dataclass(frozen=True)
class TargetTable:
    """The targets of a CSV: `values` (N, K) float64 in the CSV's row order, `names` the K column names,
    `rows` the CSV row number of each sample (the header is row 1), `csv` the file."""

    values: np.ndarray
    names: list[str]
    rows: list[int]
    csv: Path


def target_columns(fieldnames: Sequence[str], targets: Sequence[str] | None, csv: Path) -> list[str]:
    """The target columns: `targets` when given (each must be a column), else every column but `path`
    (and an empty trailing one from a line ending in a comma)."""
    columns = [c for c in fieldnames if c]
    if targets is not None:
        if isinstance(targets, str):
            targets = [targets]
        missing = [t for t in targets if t not in columns]
        if missing or not targets:
            raise ValueError(
                f"{csv}: targets={list(targets)!r} names column(s) {missing or '(none)'} the CSV does not have; "
                f"its columns: {columns}"
            )
        return list(targets)
    found = [c for c in columns if c != "path"]
    if "path" not in columns or not found:
        raise ValueError(
            f"{csv} needs a header row `path,target` (or several target columns: path,target_0,target_1 or "
            f"named ones, path,age,volume_ml); found {list(fieldnames)}"
        )
    if "label" in found:
        raise ValueError(
            f"{csv} has a `label` column: class labels are a classification task. For regression name the "
            f"target column(s) (target, or e.g. age), or pick them with targets=[...]"
        )
    return found


def read_targets(csv: str | Path, targets: Sequence[str] | None = None) -> TargetTable:
    """Read the target columns of `csv` (see `target_columns`) as float64, in row order.

    Raises ValueError naming every bad cell (row, column, the file of the row and the value: empty, not
    a number, NaN or infinite) and what to do.

    >>> table = read_targets("labels.csv")        # path,age
    >>> table.names, table.values.shape           # doctest: +SKIP
    (['age'], (120, 1))
    """
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"CSV {csv} does not exist")
    with open(csv, newline="", encoding="utf-8-sig") as f:  # -sig: Excel starts its CSVs with a BOM
        reader = csv_module.DictReader(f)
        fieldnames = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = [c.lower() if c.lower() == "path" else c for c in fieldnames]
        names = target_columns(reader.fieldnames, targets, csv)
        records = list(enumerate(reader, start=2))
    if not records:
        raise ValueError(f"{csv} has a header but no rows; add one row per file: path,{','.join(names)}")
    values = np.empty((len(records), len(names)), dtype=np.float64)
    bad = []
    for i, (row, record) in enumerate(records):
        for j, name in enumerate(names):
            text = (record.get(name) or "").strip()
            try:
                v = float(text)
            except ValueError:
                v, why = math.nan, "empty" if not text else f"{text!r} is not a number"
            else:
                why = None if math.isfinite(v) else f"{text!r} is not finite"
            if why is not None:
                bad.append(f"row {row} ({(record.get('path') or '').strip() or 'no path'}), {name}: {why}")
            values[i, j] = v
    if bad:
        more = f"\n  ... and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
        raise ValueError(
            f"{csv}: {len(bad)} target{'s' * (len(bad) > 1)} that cannot be trained on:\n  "
            + "\n  ".join(bad[:SHOW])
            + more
            + "\nEvery target must be a finite number: correct those cells, or remove their rows"
        )
    return TargetTable(values, names, [row for row, _ in records], csv)
