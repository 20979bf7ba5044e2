"""Why a run ended before its last epoch: a code to branch on and a message to show.

Code decides behaviour (whether `fit` raises, which doctor rule applies); the message is for people
and may be reworded freely. Codes:

    nonfinite    non-finite losses or gradients kept coming (max_bad_steps in a row, or nan_policy="raise")
    amp          fp16 failed and amp_fallback was off: loss scaling kept skipping steps or froze the
                 weights, or the forward pass overflowed fp16's range (the same batch is finite in fp32)
    early-stop   the monitored metric stopped improving (patience, min_delta, min_epochs)
    interrupted  the stop button (KeyboardInterrupt): `fit` kept the last completed step and re-raised
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nbtools.wording import reword

STOP_CODES = ("nonfinite", "amp", "early-stop", "interrupted")
RAISING_CODES = ("nonfinite", "amp")  # `fit` raises NonFiniteError after saving the run


@dataclass(frozen=True)
class Stop:
    code: str  # one of STOP_CODES
    message: str

    def __post_init__(self) -> None:
        if self.code not in STOP_CODES:
            raise ValueError(f"stop code must be one of {', '.join(STOP_CODES)}, got {self.code!r}")

    def __str__(self) -> str:
        return reword(self.message)  # options as the reader sets them (nbtools.wording)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Stop | None:
        return None if d is None else cls(d["code"], d["message"])
