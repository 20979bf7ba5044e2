"""What `check_augmentation` measured per op, the rules that turn it into issues, and the AugReport."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

AUG_KINDS = ("nonfinite", "domain", "mean_shift", "std_shift", "range")


@dataclass(frozen=True)
class Stats:
    """Statistics of one array over its finite values; `bad` counts NaN and Inf."""

    mean: float
    std: float
    min: float
    max: float
    n: int
    bad: int
    integer: bool

    @classmethod
    def of(cls, x: Any) -> Stats:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        a = np.asarray(x)
        integer = a.dtype.kind in "biu"
        a = a.astype(np.float64, copy=False)
        finite = np.isfinite(a)
        v = a[finite]
        if not v.size:
            nan = math.nan
            return cls(nan, nan, nan, nan, a.size, a.size, integer)
        return cls(
            float(v.mean()), float(v.std()), float(v.min()), float(v.max()), a.size, a.size - v.size, integer
        )


@dataclass
class OpRecord:
    """Every call of one op: (sample name, trial, input stats, output stats)."""

    label: str
    domain: dict | None
    calls: list[tuple[Any, int, Stats, Stats]] = field(default_factory=list)

    def add(self, name: Any, trial: int, before: Stats, after: Stats) -> None:
        self.calls.append((name, trial, before, after))

    def pooled(self, which: str) -> dict[str, float]:
        """Mean, std, min and max over all inputs ("before") or outputs ("after") of this op."""
        stats = [c[2] if which == "before" else c[3] for c in self.calls]
        stats = [s for s in stats if s.n > s.bad]
        if not stats:
            return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
        n = np.array([s.n - s.bad for s in stats], dtype=np.float64)
        m = np.array([s.mean for s in stats])
        sd = np.array([s.std for s in stats])
        mean = float((n * m).sum() / n.sum())
        var = float((n * (sd**2 + (m - mean) ** 2)).sum() / n.sum())
        return {
            "mean": mean,
            "std": math.sqrt(var),
            "min": min(s.min for s in stats),
            "max": max(s.max for s in stats),
        }

    def summary(self) -> dict[str, Any]:
        shift, ratio = _shifts(self.calls)
        return {
            "op": self.label,
            "calls": len(self.calls),
            "mean_shift": float(np.mean(shift[0])) if shift[0] else math.nan,
            "std_ratio": float(np.mean(ratio[0])) if ratio[0] else math.nan,
            "nonfinite_calls": sum(a.bad > b.bad for _, _, b, a in self.calls),
            "before": self.pooled("before"),
            "after": self.pooled("after"),
        }


def _shifts(calls) -> tuple[tuple[list, dict], tuple[list, dict]]:
    """Per call: mean shift in input stds and std ratio, also grouped by sample name."""
    d, r = [], []
    d_by, r_by = defaultdict(list), defaultdict(list)
    for name, _, b, a in calls:
        if b.std > 0 and math.isfinite(a.mean):
            d.append((a.mean - b.mean) / b.std)
            r.append(a.std / b.std)
            d_by[name].append(d[-1])
            r_by[name].append(r[-1])
    return (d, d_by), (r, r_by)


@dataclass(frozen=True)
class AugIssue:
    """op: the op (e.g. "op 1 RandomGamma"), or "pipeline" for the whole transform. sample: the sample
    (list position or dataset index) that shows it most. kind: one of AUG_KINDS. detail: the numbers."""

    op: str
    sample: Any
    kind: str
    detail: str


def judge(rec: OpRecord, tol: float) -> list[AugIssue]:
    """The issues in one op's calls; see `check_augmentation` for the rules."""
    out: list[AugIssue] = []
    calls = rec.calls
    created = [c for c in calls if c[3].bad > c[2].bad]
    if created:
        name, trial, b, a = created[0]
        out.append(
            AugIssue(
                rec.label,
                name,
                "nonfinite",
                f"created NaN/Inf in {len(created)} of {len(calls)} calls "
                f"(sample {name}, trial {trial}: {a.bad - b.bad} of {a.n} values)",
            )
        )
    if rec.domain is not None:
        floats = [c for c in calls if not c[2].integer and c[2].n > c[2].bad]
        low, high = rec.domain["low"], rec.domain["high"]
        below = min(floats, key=lambda c: c[2].min, default=None)
        above = max(floats, key=lambda c: c[2].max, default=None)
        if below is not None and below[2].min < low:
            out.append(_domain_issue(rec, below[0], f"its input reaches {below[2].min:.3g}", len(floats)))
        elif above is not None and high is not None and above[2].max > high:
            out.append(_domain_issue(rec, above[0], f"its input reaches {above[2].max:.3g}", len(floats)))
    (d, d_by), (r, r_by) = _shifts(calls)
    if d and abs(np.mean(d)) > tol:
        mean_d = float(np.mean(d))
        worst = max(d_by, key=lambda k: np.mean(d_by[k]) * np.sign(mean_d))
        b = next(c[2] for c in calls if c[0] == worst)
        after = np.mean([c[3].mean for c in calls if c[0] == worst])
        out.append(
            AugIssue(
                rec.label,
                worst,
                "mean_shift",
                f"the mean moves {mean_d:+.2f} input stds on average over "
                f"{len(d)} calls (tolerance ±{tol:g}); sample {worst}: mean {b.mean:.3g} -> {after:.3g}",
            )
        )
    if r and abs(np.mean(r) - 1) > tol:
        mean_r = float(np.mean(r))
        worst = max(r_by, key=lambda k: abs(np.mean(r_by[k]) - 1))
        b = next(c[2] for c in calls if c[0] == worst)
        after = np.mean([c[3].std for c in calls if c[0] == worst])
        out.append(
            AugIssue(
                rec.label,
                worst,
                "std_shift",
                f"the std changes by {mean_r - 1:+.0%} on average over "
                f"{len(r)} calls (tolerance ±{tol:.0%}); sample {worst}: std {b.std:.3g} -> {after:.3g}",
            )
        )
    broken = [
        c
        for c in calls
        if c[2].max > c[2].min
        and (
            c[3].min < c[2].min - tol * (c[2].max - c[2].min)
            or c[3].max > c[2].max + tol * (c[2].max - c[2].min)
        )
    ]
    if broken:
        name, trial, b, a = broken[0]
        out.append(
            AugIssue(
                rec.label,
                name,
                "range",
                f"output [{a.min:.3g}, {a.max:.3g}] reaches beyond the input's "
                f"[{b.min:.3g}, {b.max:.3g}] by more than {tol:g} of its span, in {len(broken)} of {len(calls)} calls",
            )
        )
    return out


def _domain_issue(rec: OpRecord, sample: Any, what: str, n: int) -> AugIssue:
    dom = rec.domain
    span = f"[{dom['low']:g}, {dom['high']:g}]" if dom["high"] is not None else f">= {dom['low']:g}"
    fix = (
        "; z-scored data is negative for about half its values: apply it before z-scoring, on [0, 1] data, or "
        "use a range-preserving gamma (nbt.data.Augment3D's rescales each volume to [0, 1] and back)"
        if dom["high"] is None
        else "; rescale to [0, 1] before it, or drop it for normalised data"
    )
    detail = (
        f"{dom['op']} {dom['why']}; it needs values {span} but {what} (sample {sample}, {n} inputs seen){fix}"
    )
    return AugIssue(rec.label, sample, "domain", detail)


@dataclass
class AugReport:
    """The result of `check_augmentation`.

    issues: every problem, by op and sample. before / after: mean, std, min and max over all inputs
    and all outputs (finite values). ops: per op, its calls, mean shift (input stds), std ratio,
    calls that created NaN/Inf, and its own before / after.
    """

    issues: list[AugIssue]
    before: dict[str, float]
    after: dict[str, float]
    records: list[OpRecord] = field(repr=False)
    n_samples: int
    trials: int
    kind: str

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def ops(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.records]

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.issues)} issue{'s' * (len(self.issues) > 1)}: NOT OK"
        return f"AugReport ({self.kind}): {self.n_samples} samples x {self.trials} trials: {verdict}"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  {i.op}: {i.kind} (sample {i.sample}): {i.detail}" for i in self.issues]
        for label, s in (("before", self.before), ("after", self.after)):
            lines.append(
                f"  {label:6s} mean {s['mean']:.4g}, std {s['std']:.4g}, min {s['min']:.4g}, max {s['max']:.4g}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    def _repr_html_(self) -> str:
        e = html.escape
        colour = "green" if self.ok else "#b00"
        parts = [f"<p style='color:{colour}'><b>{e(self.summary())}</b></p>"]
        if self.issues:
            rows = "".join(
                f"<tr><td>{e(i.op)}</td><td>{i.kind}</td><td>{e(str(i.sample))}</td><td>{e(i.detail)}</td></tr>"
                for i in self.issues
            )
            parts.append(
                f"<table><tr><th>op</th><th>kind</th><th>sample</th><th>detail</th></tr>{rows}</table>"
            )
        head = "<tr><th>op</th><th>mean shift (std)</th><th>std ratio</th><th>NaN/Inf calls</th></tr>"
        rows = "".join(
            f"<tr><td>{e(o['op'])}</td><td>{o['mean_shift']:+.3f}</td><td>{o['std_ratio']:.3f}</td>"
            f"<td>{o['nonfinite_calls']}</td></tr>"
            for o in self.ops
        )
        parts.append(f"<table>{head}{rows}</table>")
        return "".join(parts)
