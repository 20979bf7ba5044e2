"""Diagnosis: findings that name a failure and its fix, and the tools that locate it."""

from nbtools.diagnose.doctor import doctor
from nbtools.diagnose.findings import Finding
from nbtools.diagnose.nonfinite import NonFiniteReport, find_nonfinite, nonfinite_report

__all__ = ["Finding", "NonFiniteReport", "doctor", "find_nonfinite", "nonfinite_report"]
