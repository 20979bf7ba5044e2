"""Figures of a run: learning curves now, the live dashboard and report figures in their own modules."""

from nbtools.viz.curves import save_curves

__all__ = ["save_curves"]
