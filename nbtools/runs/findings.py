"""A Finding: what went wrong, the evidence, and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    code: str  # stable identifier, e.g. "frozen-weights"
    message: str  # one line with the evidence (numbers, steps, epochs)
    fix: str  # what to do about it
    epoch: int | None = None
    step: int | None = None

    def __str__(self) -> str:
        where = f" (epoch {self.epoch})" if self.epoch is not None else ""
        return f"[{self.code}]{where} {self.message}\n    fix: {self.fix}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        return cls(**{k: d.get(k) for k in ("code", "message", "fix", "epoch", "step")})
