"""Diagnosis: findings that name a failure and its fix, and the tools that locate it."""

from nbtools.diagnose.doctor import doctor
from nbtools.diagnose.lr_finder import LRFinderResult, find_lr
from nbtools.diagnose.nonfinite import NonFiniteReport, find_nonfinite, nonfinite_report
from nbtools.diagnose.overfit import OverfitReport, overfit_batch

__all__ = [
    "LRFinderResult",
    "NonFiniteReport",
    "OverfitReport",
    "doctor",
    "find_lr",
    "find_nonfinite",
    "nonfinite_report",
    "overfit_batch",
]
