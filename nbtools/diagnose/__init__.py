"""Diagnosis: findings that name a failure and its fix."""

from nbtools.diagnose.findings import Finding

__all__ = ["Finding"]
