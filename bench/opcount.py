"""How many aten ops a training step dispatches: on a GPU each is (at least) one kernel launch, ~5-10 us
of host time, so the count is the stable measure of a step's overhead where wall-clock time is noisy.

`OpCounter` is a TorchDispatchMode: it sees every op that reaches the backend (forward, autograd's
backward, optimizer, telemetry), counts it and runs it unchanged. A multi-tensor `torch._foreach_*` op
counts once, as it launches one kernel per chunk of tensors on a GPU. `mark()` cuts the count into
steps: call it at the start of every step and `per_step()` gives the ops of each complete step.

>>> with OpCounter() as ops:            # doctest: +SKIP
...     for x, y in batches:
...         ops.mark()
...         step(x, y)
>>> statistics.median(ops.per_step())   # doctest: +SKIP

A measuring tool, not part of the package: it sits with its users, bench/overhead.py (`from opcount
import OpCounter`, as paired_step.py imports overhead) and the op-count tests (`from bench.opcount
import OpCounter`, the repository root being on the path as it is for `tests.helpers`).
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = 0
        self.by_name: Counter[str] = Counter()
        self.marks: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.by_name[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def mark(self) -> None:
        """A step starts here."""
        self.marks.append(self.total)

    def per_step(self) -> list[int]:
        """The ops between consecutive marks (the last, unfinished step is left out)."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])]
