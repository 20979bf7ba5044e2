"""The run record and its folder: `Run`, `Finding`, `Stop`, the checkpoints, the metrics, the file names.

Everything that reads a run (`fit`, the doctor, the figures, the resume notebook) reads it through
this package, which imports none of them.
"""

from nbtools.runs.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    CheckpointList,
    describe_epochs,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
)
from nbtools.runs.classes import class_name, class_names
from nbtools.runs.compare import compare_runs
from nbtools.runs.findings import Finding, open_first
from nbtools.runs.lock import LockState, RunLock, RunLockedError, read_lock
from nbtools.runs.run import NonFiniteError, Run, RunExistsError
from nbtools.runs.stop import STOP_CODES, Stop
from nbtools.runs.table import RunTable
from nbtools.tasks.classification_metrics import classification_metrics, probabilities

__all__ = [
    "STOP_CODES",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointList",
    "Finding",
    "LockState",
    "NonFiniteError",
    "Run",
    "RunExistsError",
    "RunLock",
    "RunLockedError",
    "RunTable",
    "Stop",
    "class_name",
    "class_names",
    "classification_metrics",
    "compare_runs",
    "describe_epochs",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "open_first",
    "probabilities",
    "prune_checkpoints",
    "read_lock",
]
