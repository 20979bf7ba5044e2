"""What `check_augmentation` measured per op, the rules that turn it into issues, and the AugReport."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

AUG_KINDS = ("nonfinite", "domain", "mean_shift", "std_shift", "range", "mask_interpolated", "mask_classes")


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


class Call(NamedTuple):
    sample: Any  # list position or dataset index
    trial: int
    before: Stats  # of the op's input
    after: Stats  # of its output


@dataclass
class OpRecord:
    """Every call of one op, and the domain rule it has (if any)."""

    label: str
    domain: dict | None
    calls: list[Call] = field(default_factory=list)

    def add(self, sample: Any, trial: int, before: Stats, after: Stats) -> None:
        self.calls.append(Call(sample, trial, before, after))

    def pooled(self, which: str) -> dict[str, float]:
        """Mean, std, min and max over all inputs ("before") or outputs ("after") of this op."""
        stats = [getattr(c, which) for c in self.calls]
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

    def shifts(self) -> tuple[dict[Any, list[float]], dict[Any, list[float]]]:
        """Per sample, each call's mean shift (in input stds) and std ratio."""
        d, r = defaultdict(list), defaultdict(list)
        for c in self.calls:
            if c.before.std > 0 and math.isfinite(c.after.mean):
                d[c.sample].append((c.after.mean - c.before.mean) / c.before.std)
                r[c.sample].append(c.after.std / c.before.std)
        return d, r

    def summary(self) -> dict[str, Any]:
        d, r = self.shifts()
        return {
            "op": self.label,
            "calls": len(self.calls),
            "mean_shift": _mean(d),
            "std_ratio": _mean(r),
            "nonfinite_calls": sum(c.after.bad > c.before.bad for c in self.calls),
            "before": self.pooled("before"),
            "after": self.pooled("after"),
        }


def _mean(by_sample: dict[Any, list[float]]) -> float:
    values = [v for vs in by_sample.values() for v in vs]
    return float(np.mean(values)) if values else math.nan


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
    found = [_nonfinite(rec), _domain(rec), *_shift(rec, tol), _range(rec, tol)]
    return [i for i in found if i is not None]


def _nonfinite(rec: OpRecord) -> AugIssue | None:
    created = [c for c in rec.calls if c.after.bad > c.before.bad]
    if not created:
        return None
    c = created[0]
    return AugIssue(
        rec.label,
        c.sample,
        "nonfinite",
        f"created NaN/Inf in {len(created)} of {len(rec.calls)} calls "
        f"(sample {c.sample}, trial {c.trial}: {c.after.bad - c.before.bad} of {c.after.n} values)",
    )


def _domain(rec: OpRecord) -> AugIssue | None:
    if rec.domain is None:
        return None
    # integer images (uint8) are in range by construction; albumentations handles them by lookup table
    floats = [c for c in rec.calls if not c.before.integer and c.before.n > c.before.bad]
    if not floats:
        return None
    low, high = rec.domain["low"], rec.domain["high"]
    below = min(floats, key=lambda c: c.before.min)
    above = max(floats, key=lambda c: c.before.max)
    if below.before.min < low:
        return _domain_issue(rec, below.sample, f"its input reaches {below.before.min:.3g}", len(floats))
    if high is not None and above.before.max > high:
        return _domain_issue(rec, above.sample, f"its input reaches {above.before.max:.3g}", len(floats))
    return None


def _shift(rec: OpRecord, tol: float) -> list[AugIssue]:
    """Mean and std shifts, judged on the average over all calls (random ops average out there)."""
    found = []
    d, r = rec.shifts()
    for kind, by_sample, centre, stat in (("mean_shift", d, 0.0, "mean"), ("std_shift", r, 1.0, "std")):
        avg = _mean(by_sample)
        if not abs(avg - centre) > tol:  # False for NaN too
            continue
        worst = max(by_sample, key=lambda k: (np.mean(by_sample[k]) - centre) * np.sign(avg - centre))
        mine = [c for c in rec.calls if c.sample == worst]
        was = np.mean([getattr(c.before, stat) for c in mine])
        now = np.mean([getattr(c.after, stat) for c in mine])
        moves = (
            f"the mean moves {avg:+.2f} input stds"
            if kind == "mean_shift"
            else f"the std changes by {avg - 1:+.0%}"
        )
        found.append(
            AugIssue(
                rec.label,
                worst,
                kind,
                f"{moves} on average over {sum(map(len, by_sample.values()))} calls (tolerance ±{tol:g}); "
                f"sample {worst}: {stat} {was:.3g} -> {now:.3g}",
            )
        )
    return found


def _range(rec: OpRecord, tol: float) -> AugIssue | None:
    def beyond(c: Call) -> bool:
        span = c.before.max - c.before.min
        return span > 0 and (
            c.after.min < c.before.min - tol * span or c.after.max > c.before.max + tol * span
        )

    broken = [c for c in rec.calls if beyond(c)]
    if not broken:
        return None
    c = broken[0]
    return AugIssue(
        rec.label,
        c.sample,
        "range",
        f"output [{c.after.min:.3g}, {c.after.max:.3g}] reaches beyond the input's [{c.before.min:.3g}, "
        f"{c.before.max:.3g}] by more than {tol:g} of its span, in {len(broken)} of {len(rec.calls)} calls",
    )


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
