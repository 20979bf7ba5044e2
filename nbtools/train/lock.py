"""`fit` holds its run folder's lock (nbtools.runs.lock) from its first look at the folder to its
return, an exception or KeyboardInterrupt included. Under torchrun rank 0 holds it for all ranks."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable

from nbtools.runs.files import run_path
from nbtools.runs.lock import RunLock
from nbtools.step.distributed import launched_by_torchrun


def holds_run_lock(fit: Callable) -> Callable:
    """Wrap `fit(..., run_dir, ...)` so it runs holding `run_dir`'s lock (RunLockedError otherwise)."""
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def locked(*args, **kwargs):
        run_dir = run_path(signature.bind(*args, **kwargs).arguments["run_dir"])
        main = not launched_by_torchrun() or int(os.environ["RANK"]) == 0
        with RunLock(run_dir) if main else contextlib.nullcontext():
            return fit(*args, **kwargs)

    return locked
