"""DataReport: what `validate_dataset` found, readable as text and as an HTML table in a notebook."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("empty", "read", "nan", "inf", "extreme", "shape", "dtype", "label")
SHOW = 10  # issues printed by str(report); all of them stay in report.issues


@dataclass(frozen=True)
class DataIssue:
    """One problem with one sample.

    index: the dataset index (int), "batch b item j" for a DataLoader whose batches cannot be mapped
    back to dataset indices, or None for the dataset as a whole ("empty"). kind: one of KINDS: "empty"
    (no samples), "read" (`dataset[index]` raised), "nan", "inf", "extreme", "shape", "dtype", "label".
    detail: the numbers, e.g. "12 NaN of 32768 values". path: the sample's file when the dataset
    knows it (its `.paths`), else None.
    """

    index: int | str | None
    kind: str
    detail: str
    path: str | None = None

    def where(self) -> str:
        """ "index 3 (a/b.nii.gz)", "index 3", or "dataset" for an issue of the whole dataset."""
        if self.index is None:
            return "dataset"
        return f"index {self.index}" + (f" ({self.path})" if self.path else "")


@dataclass
class DataReport:
    """The result of `validate_dataset`: every bad sample, by index and kind, plus the data's statistics.

    n: samples checked. issues: every problem found, sorted by index. stats: per-channel "mean", "std"
    (population, ddof=0), "min", "max" and "count" lists over finite values only; "shapes" and "dtypes"
    (value -> samples); "label_counts" (label -> samples) and "imbalance" (largest class count / smallest,
    inf when a class of range(num_classes) has no sample), or None without scalar labels.

    >>> rep = nbt.validate_dataset(ds)      # doctest: +SKIP
    >>> rep.ok, rep.indices("nan")          # doctest: +SKIP
    (False, [3, 17])
    """

    n: int
    issues: list[DataIssue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def indices(self, kind: str | None = None) -> list[int | str]:
        """Indices with an issue (of `kind`, if given), each once, in order: e.g. to drop them. An
        "empty" issue belongs to no index."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))} or None, got {kind!r}")
        seen: dict[int | str, None] = {}
        for issue in self.issues:
            if issue.index is not None and (kind is None or issue.kind == kind):
                seen[issue.index] = None
        return list(seen)

    def paths(self, kind: str | None = None) -> list[str]:
        """The files of the samples with an issue (of `kind`, if given), each once, in order: e.g. to
        re-export or remove them. Empty when the dataset does not know its files."""
        seen = {i.path: None for i in self.issues if i.path and (kind is None or i.kind == kind)}
        return list(seen)

    def summary(self) -> str:
        if self.ok:
            return f"DataReport: {self.n} samples checked, no issues: OK"
        if self.n == 0:
            return "DataReport: 0 samples checked, the dataset is empty: NOT OK"
        kinds = Counter(i.kind for i in self.issues)
        by_kind = ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k])
        return f"DataReport: {self.n} samples checked, {len(self.indices())} with issues ({by_kind}): NOT OK"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  {i.where()}: {i.kind}: {i.detail}" for i in self.issues[:SHOW]]
        if len(self.issues) > SHOW:
            lines.append(f"  ... and {len(self.issues) - SHOW} more (report.issues has them all)")
        lines += [f"  {line}" for line in _stats_lines(self.stats)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    def _repr_html_(self) -> str:
        e = html.escape
        colour = "green" if self.ok else "#b00"
        parts = [f"<p style='color:{colour}'><b>{e(self.summary())}</b></p>"]
        if self.issues:
            shown = self.issues[: SHOW * 5]
            rows = "".join(
                f"<tr><td>{e(str(i.index))}</td><td>{e(i.path or '')}</td><td>{i.kind}</td><td>{e(i.detail)}</td></tr>"
                for i in shown
            )
            head = "<tr><th>index</th><th>file</th><th>kind</th><th>detail</th></tr>"
            parts.append(f"<table>{head}{rows}</table>")
            if len(self.issues) > len(shown):
                parts.append(f"<p>... and {len(self.issues) - len(shown)} more (report.issues)</p>")
        ch = self.stats.get("mean") or []
        if ch:
            head = "".join(f"<th>{k}</th>" for k in ("channel", "mean", "std", "min", "max"))
            body = "".join(
                "<tr>"
                + f"<td>{c}</td>"
                + "".join(f"<td>{self.stats[k][c]:.4g}</td>" for k in ("mean", "std", "min", "max"))
                + "</tr>"
                for c in range(len(ch))
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        if self.stats.get("label_counts"):
            parts.append(f"<p>{e(_label_line(self.stats))}</p>")
        return "".join(parts)


def _label_line(stats: dict[str, Any]) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in stats["label_counts"].items())
    return f"labels: {counts} (imbalance {stats['imbalance']:.3g})"


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    lines = [
        f"channel {c}: mean {m:.4g}, std {s:.4g}, min {lo:.4g}, max {hi:.4g}"
        for c, (m, s, lo, hi) in enumerate(
            zip(stats.get("mean", []), stats.get("std", []), stats.get("min", []), stats.get("max", []))
        )
    ]
    if len(lines) > 8:  # a (N, D, H, W) tensor without a channel axis reads as D channels
        lines = [*lines[:4], f"... {len(lines) - 4} more channels (report.stats)"]
    if stats.get("label_counts"):
        lines.append(_label_line(stats))
    return lines
