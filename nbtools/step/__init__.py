"""One optimizer step and what it runs on: the precision (autocast + GradScaler) and the process group.

Below everything that trains: `fit` runs its steps through `train_step`, and so do the diagnostics
that train a copy of the model (overfit test, LR finder, gradient heatmap), so they take the same
precision path.
"""

from nbtools.step.buffers import BufferGuard
from nbtools.step.distributed import SINGLE_PROCESS, Distributed
from nbtools.step.precision import Precision
from nbtools.step.term_grads import TermGradProbe, TermGrads
from nbtools.step.train_step import StepResult, as_float32, train_step

__all__ = [
    "SINGLE_PROCESS",
    "BufferGuard",
    "Distributed",
    "Precision",
    "StepResult",
    "TermGradProbe",
    "TermGrads",
    "as_float32",
    "train_step",
]
