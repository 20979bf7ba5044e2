"""The fit loop and everything it keeps: precision, guards, checkpoints, schedule, EMA, early stop."""

from nbtools.train.checkpoint import CheckpointError, find_checkpoint, list_checkpoints, load_checkpoint
from nbtools.train.fit import fit
from nbtools.train.run import NonFiniteError, Run, RunExistsError

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "Run",
    "RunExistsError",
    "find_checkpoint",
    "fit",
    "list_checkpoints",
    "load_checkpoint",
]
