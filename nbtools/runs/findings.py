"""A Finding: what went wrong, the evidence, the fix, and whether it still holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nbtools.wording import reword

STATUSES = ("open", "resolved")


@dataclass(frozen=True)
class Finding:
    code: str  # stable identifier, e.g. "frozen-weights"
    message: str  # one line with the evidence (numbers, steps, epochs)
    fix: str  # what to do about it
    epoch: int | None = None
    step: int | None = None
    status: str = "open"  # "open": it still holds at the end of the record; "resolved": it passed
    resolved_epoch: int | None = None  # with "resolved": the first epoch at which it no longer held

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"finding status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def resolved(self, epoch: int | None) -> Finding:
        """This finding marked as passed at `epoch`."""
        return dataclasses.replace(self, status="resolved", resolved_epoch=epoch)

    def __str__(self) -> str:
        where = [f"epoch {self.epoch}"] if self.epoch is not None else []
        if not self.is_open:
            at = f" at epoch {self.resolved_epoch}" if self.resolved_epoch is not None else ""
            where.append(f"resolved{at}")
        head = f"[{self.code}]" + (f" ({'; '.join(where)})" if where else "")
        return reword(f"{head} {self.message}\n    fix: {self.fix}")  # options as the reader sets them

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        """A finding of a run record in today's shape (nbtools.runs.upgrade)."""
        fields = ("code", "message", "fix", "epoch", "step", "resolved_epoch", "status")
        return cls(**{k: d[k] for k in fields})


def open_first(findings: list[Finding]) -> list[Finding]:
    """Open findings first, then the resolved ones, each in their own order."""
    return sorted(findings, key=lambda f: not f.is_open)


def status_from(found: Finding, records: list[dict], holds: Callable[[dict], bool]) -> Finding:
    """`found`, open if the latest of `records` (run.steps or run.history, oldest first) still `holds`;
    else resolved at the epoch of the first record of the trailing stretch where it does not."""
    first_clear = None
    for r in reversed(records):
        if holds(r):
            break
        first_clear = r
    return found if first_clear is None else found.resolved(first_clear["epoch"])
