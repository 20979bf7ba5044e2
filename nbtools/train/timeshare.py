"""Work that may take only a share of the wall clock.

The doctor's step rules read the whole of `run.steps` (one record per log interval), so their cost
grows with the run: ~1.7 us per record, 17 ms at 10,000 intervals. Run at every interval of a long
run of short steps, that is more than the steps themselves. `fit` runs them at most `STEP_RULES_SHARE`
(0.1 %) of the time (after a pass that took d seconds, the next waits d / share), at every epoch end
and whenever a guard stops the run: at GPU step times that is every interval early in a run, at a
~1 ms step every few intervals (a pass takes ~50-70 us early in a run), late in a long run a finding
shows some seconds after its interval (17 s at 10,000 intervals), and no finding is ever missed (the
rules are functions of the whole record). The guards (non-finite steps, fp16) are not rules: they
act at every interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

STEP_RULES_SHARE = 0.001


class TimeShare:
    """`run(fn)` calls fn when its share of the time since the last call allows, else returns None."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.next_at = 0.0  # perf_counter time from which the next call is due

    def run(self, fn: Callable[[], T], force: bool = False) -> T | None:
        now = time.perf_counter()
        if not force and now < self.next_at:
            return None
        result = fn()
        done = time.perf_counter()
        self.next_at = done + (done - now) / self.share
        return result
